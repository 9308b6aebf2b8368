//! Exact resume when the step itself draws from libtorch's generator (sampling, dropout): the
//! trainer reseeds it from (seed, step) before every step, since tch cannot save its state. A
//! test binary of its own, because that generator is global to the process and tests in one
//! binary run in parallel threads.

mod common;

use common::{Lm, config, data, recorder, run};
use rlhf_train::{Resume, Trainer};

#[test]
fn resume_replays_libtorch_randomness() {
    let tmp = tempfile::tempdir().expect("tmp");
    let fit = |dir: &str, resume: Resume, stop_after: Option<u64>| {
        let mut lm = Lm::new(0, 32);
        lm.noise = true;
        let mut trainer = Trainer::new(config(), run(&tmp.path().join(dir), resume)).expect("new");
        let losses = recorder(&mut trainer, stop_after);
        let ok = trainer.fit(&mut lm, &mut data()).is_ok();
        let losses = losses.borrow().clone();
        (ok, losses)
    };
    let (ok, straight) = fit("straight", Resume::No, None);
    assert!(ok && straight.len() == 8);
    let (ok, first) = fit("resumed", Resume::No, Some(6));
    assert!(!ok);
    assert_eq!(first[..], straight[..6]);
    let (ok, second) = fit("resumed", Resume::Latest, None);
    assert!(ok);
    assert_eq!(second[..], straight[4..], "losses after resume, bitwise");

    let mut quiet = Lm::new(0, 32);
    let mut trainer =
        Trainer::new(config(), run(&tmp.path().join("quiet"), Resume::No)).expect("new");
    let plain = recorder(&mut trainer, None);
    trainer.fit(&mut quiet, &mut data()).expect("run");
    assert_ne!(
        plain.borrow()[0],
        straight[0],
        "the noise must reach the loss"
    );
}
