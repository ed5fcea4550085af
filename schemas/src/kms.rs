//! Alibaba Cloud KMS OpenAPI 2016-01-20: error codes and shared shapes.
