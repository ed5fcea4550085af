fn main() {
    println!("xki-proxy: XKI proxy (XKS-v1 compatible). Not yet implemented: see README.md.");
}
