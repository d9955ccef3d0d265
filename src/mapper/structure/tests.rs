//! Unit tests of structural matching's helpers.

use super::*;

#[test]
fn dice_and_minus() {
    assert_eq!(dice(&[1, 2, 2, 3], &[2, 2, 3, 4]), 0.75);
    assert_eq!(minus(&[1, 2, 2, 3], &[2, 3]), vec![1, 2]);
    assert_eq!(minus(&[5], &[1, 2]), vec![5]);
}

#[test]
fn has_other_is_membership_in_the_difference() {
    // Small random multisets (a fixed linear congruential sequence): `alike` is drawn
    // from `all`, as the pools' look-alike unions are.
    let mut seed = 12345u64;
    let mut next = |m: u64| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) % m
    };
    for _ in 0..500 {
        let mut all: Vec<u64> = (0..next(12)).map(|_| next(5)).collect();
        all.sort_unstable();
        let mut alike: Vec<u64> = all.iter().copied().filter(|_| next(2) == 0).collect();
        alike.sort_unstable();
        let others = minus(&all, &alike);
        for x in 0..6 {
            assert_eq!(
                has_other(&all, &alike, x),
                others.contains(&x),
                "{all:?} {alike:?} {x}"
            );
        }
    }
}

#[test]
fn incompatible_chunks() {
    let inc = Incompat::new(&[(
        vec!["backbone".into(), "encoder".into()],
        vec!["head".into(), "classifier".into()],
    )]);
    assert!(inc.forbidden("backbone.layer1.weight", "head.weight"));
    assert!(inc.forbidden("heads.0.weight", "encoder.x.weight"));
    assert!(inc.forbidden("model.encoder_block.w", "classifier.w"));
    assert!(!inc.forbidden("backbone.layer1.weight", "encoder.layer1.weight"));
    assert!(!inc.forbidden("multihead.weight", "backbone.weight"));
}
