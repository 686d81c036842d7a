use super::*;
use crate::fleet::bucket::Wait;

fn quota(rpm: Option<u64>, tpm: Option<u64>, max_concurrent: Option<u64>) -> Quota {
    Quota {
        rpm,
        tpm,
        tpd: None,
        max_concurrent,
    }
}

fn granted(granted: u64, left: u64) -> link::Granted {
    link::Granted {
        granted,
        left,
        wait: std::time::Duration::ZERO,
    }
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

#[test]
fn alone_a_key_gets_its_rpm_then_a_refusal_with_the_wait() {
    let fleet = Fleet::new(&LimitSettings::default());
    let key = (fleet.key_scope("a"), quota(Some(3), None, None));
    block_on(async {
        for _ in 0..3 {
            fleet
                .admit(vec![key.clone()], 10)
                .await
                .unwrap()
                .settle(Some(10));
        }
        let (at, refused, rates) = fleet.admit(vec![key.clone()], 10).await.unwrap_err();
        assert_eq!((at, refused.kind, refused.limit), (0, Kind::Rpm, 3));
        assert_eq!(refused.wait, Wait::For(std::time::Duration::from_secs(20)));
        assert_eq!(rates.requests.map(|r| (r.0, r.1)), Some((3, 0)));
    });
}

#[test]
fn a_refusal_by_the_model_gives_the_key_back_what_it_took() {
    let fleet = Fleet::new(&LimitSettings::default());
    let key = (fleet.key_scope("a"), quota(Some(2), None, Some(5)));
    let model = (fleet.model_scope("m"), quota(Some(1), None, None));
    block_on(async {
        let first = fleet
            .admit(vec![key.clone(), model.clone()], 1)
            .await
            .unwrap();
        let (at, refused, _) = fleet
            .admit(vec![key.clone(), model.clone()], 1)
            .await
            .unwrap_err();
        assert_eq!((at, refused.kind), (1, Kind::Rpm));
        // The key's second request and its slot were given back: one more passes alone.
        fleet.admit(vec![key.clone()], 1).await.unwrap();
        assert!(fleet.admit(vec![key.clone()], 1).await.is_err());
        drop(first);
    });
}

#[test]
fn slots_come_back_when_requests_end() {
    let fleet = Fleet::new(&LimitSettings::default());
    let key = (fleet.key_scope("a"), quota(None, None, Some(2)));
    block_on(async {
        let a = fleet.admit(vec![key.clone()], 0).await.unwrap();
        let _b = fleet.admit(vec![key.clone()], 0).await.unwrap();
        let (_, refused, _) = fleet.admit(vec![key.clone()], 0).await.unwrap_err();
        assert_eq!(refused.kind, Kind::Concurrent);
        a.settle(None);
        fleet.admit(vec![key.clone()], 0).await.unwrap();
    });
}

#[test]
fn tokens_are_reserved_up_front_and_settled_with_the_usage() {
    let fleet = Fleet::new(&LimitSettings::default());
    let key = (fleet.key_scope("a"), quota(None, Some(100), None));
    block_on(async {
        let first = fleet.admit(vec![key.clone()], 60).await.unwrap();
        assert_eq!(first.rates.tokens.map(|t| t.1), Some(40));
        let (_, refused, _) = fleet.admit(vec![key.clone()], 60).await.unwrap_err();
        assert_eq!(refused.kind, Kind::Tpm);
        // It used 10 of its 60: 50 come back, and the second request fits.
        first.settle(Some(10));
        fleet.admit(vec![key.clone()], 60).await.unwrap();
        // Larger than the whole limit: it never fits.
        let (_, refused, _) = fleet.admit(vec![key.clone()], 101).await.unwrap_err();
        assert_eq!(refused.wait, Wait::Never);
    });
}

#[test]
fn with_redis_unreachable_each_instance_counts_alone() {
    let settings = LimitSettings {
        redis: Some("redis://127.0.0.1:1/0".into()),
        ..LimitSettings::default()
    };
    let fleet = Fleet::new(&settings);
    let key = (fleet.key_scope("a"), quota(Some(2), None, None));
    block_on(async {
        assert!(!fleet.link().unwrap().is_up());
        fleet.admit(vec![key.clone()], 1).await.unwrap();
        fleet.admit(vec![key.clone()], 1).await.unwrap();
        assert!(fleet.admit(vec![key.clone()], 1).await.is_err());
    });
}

#[test]
fn counting_alone_after_redis_is_lost_starts_from_the_fleets_view() {
    let fleet = Fleet::new(&LimitSettings::default());
    let scope = fleet.key_scope("a");
    let q = quota(Some(100), None, None);
    let now = std::time::Instant::now();
    // Counted in Redis: a lease of 5 taken when the fleet's bucket had 8 left, one spent here.
    let mut entries = Vec::new();
    scope.reserve(&q, 0, now, &mut entries).unwrap();
    assert_eq!(entries.len(), 1);
    scope.granted(Kind::Rpm, granted(5, 3), now);
    // Redis is lost with two instances alive: this one has half of the 3 + 4 the fleet had
    // left, not half of a full bucket.
    for _ in 0..3 {
        scope.take_alone(&q, 0, 2, now).unwrap();
    }
    let refused = scope.take_alone(&q, 0, 2, now).unwrap_err();
    assert_eq!((refused.kind, refused.limit), (Kind::Rpm, 100));
}

#[test]
fn a_lease_covers_requests_without_asking_redis() {
    let fleet = Fleet::new(&LimitSettings::default());
    let scope = fleet.key_scope("a");
    let q = quota(Some(10_000), None, None);
    let now = std::time::Instant::now();
    let mut entries = Vec::new();
    scope.reserve(&q, 0, now, &mut entries).unwrap();
    // 1 for the request, plus 1% of the limit for the next ones.
    assert_eq!((entries[0].1.min, entries[0].1.want), (1, 101));
    scope.granted(Kind::Rpm, granted(101, 9_899), now);
    for _ in 0..100 {
        let mut entries = Vec::new();
        scope.reserve(&q, 0, now, &mut entries).unwrap();
        assert!(entries.is_empty());
    }
    let mut entries = Vec::new();
    scope.reserve(&q, 0, now, &mut entries).unwrap();
    assert_eq!(entries.len(), 1);
}

#[test]
fn racing_requests_never_pass_on_the_same_units_and_a_refusal_gives_them_back() {
    let fleet = Fleet::new(&LimitSettings::default());
    let scope = fleet.key_scope("a");
    let q = quota(Some(60), None, Some(1));
    let now = std::time::Instant::now();
    let (mut first, mut second) = (Vec::new(), Vec::new());
    // Both reserve before Redis answers either: each asks for its own unit and slot.
    scope.reserve(&q, 0, now, &mut first).unwrap();
    scope.reserve(&q, 0, now, &mut second).unwrap();
    assert_eq!((first.len(), second.len()), (2, 2));
    assert_eq!((second[0].1.min, second[1].1.min), (2, 1));
    scope.untake(&q, 0, true, now);
    let mut again = Vec::new();
    scope.reserve(&q, 0, now, &mut again).unwrap();
    assert_eq!(again[0].1.min, 2);
}

#[test]
fn a_debt_beyond_the_limit_delays_requests_it_never_locks_them_out() {
    let fleet = Fleet::new(&LimitSettings::default());
    let scope = fleet.key_scope("a");
    let q = quota(None, Some(1000), None);
    let now = std::time::Instant::now();
    let mut entries = Vec::new();
    scope.reserve(&q, 100, now, &mut entries).unwrap();
    scope.granted(Kind::Tpm, granted(110, 890), now);
    // It used 3,100 tokens where 100 were reserved: 3,000 of debt, three times the limit.
    scope.settle(&q, -3000, true, None, now);
    let mut entries = Vec::new();
    scope
        .reserve(
            &q,
            100,
            now + std::time::Duration::from_secs(60),
            &mut entries,
        )
        .unwrap();
    assert_eq!(
        entries[0].1.min, 1000,
        "a whole limit's worth, not the whole debt"
    );
}
