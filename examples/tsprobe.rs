use std::time::Instant;
fn main() {
    let p = std::path::PathBuf::from(std::env::args().nth(1).unwrap());
    for _ in 0..3 {
        let t = Instant::now();
        let s = weightmap::read::read_raw(&p, &Default::default()).unwrap();
        eprintln!("read {:?} n={}", t.elapsed(), s.tensors.len());
    }
}
