fn main() {
    println!("hyok-dev-pki: not yet implemented");
}
