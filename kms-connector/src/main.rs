fn main() {
    println!("kms-connector: KMS OpenAPI server. Not yet implemented: see README.md.");
}
