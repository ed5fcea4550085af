//! The wire contracts of the HYOK stack.
//!
//! One module per protocol, no I/O:
//! - [`xki`]: the KMS ↔ XKI proxy protocol (wire-compatible with the public XKS Proxy API v1);
//! - [`ekm`]: the proxy ↔ external key manager API (ours, versioned under `/v1`);
//! - [`kms`]: Alibaba Cloud KMS OpenAPI 2016-01-20 error codes and shapes;
//! - [`sigv4`]: AWS Signature Version 4 signer and verifier (XKI authentication);
//! - [`acs`]: Alibaba Cloud request signatures (ACS3-HMAC-SHA256 and the HMAC-SHA1 RPC signature);
//! - [`b64`]: strict standard Base64.
#![forbid(unsafe_code)]

/// Declares a closed enumeration with one wire name per value: `ALL`, `as_str`, exact
/// `parse`, `Display` and `Serialize` as that name. The one way the workspace writes such types
/// (the KMS vocabulary here, the connector's stored enumerations).
#[macro_export]
macro_rules! wire_enum {
    (
        $(#[$meta:meta])*
        $name:ident { $( $(#[$vmeta:meta])* $variant:ident => $text:literal, )+ }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [Self] = &[$(Self::$variant),+];

            /// The wire (and stored) name.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $( Self::$variant => $text, )+
                }
            }

            /// The value with this exact (case-sensitive) wire name.
            pub fn parse(text: &str) -> Option<Self> {
                match text {
                    $( $text => Some(Self::$variant), )+
                    _ => None,
                }
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl $crate::__serde::Serialize for $name {
            fn serialize<S: $crate::__serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }
    };
}

#[doc(hidden)]
pub use serde as __serde;

pub mod acs;
pub mod b64;
pub mod config;
pub mod ekm;
pub mod http;
pub mod kms;
pub mod sigv4;
pub mod xki;
