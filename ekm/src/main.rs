fn main() {
    println!("ekm: external key manager (PKCS#11). Not yet implemented: see README.md.");
}
