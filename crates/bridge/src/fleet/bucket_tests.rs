use super::*;

const MINUTE: Duration = Duration::from_secs(60);

#[test]
fn a_burst_of_the_limit_then_the_limit_per_period() {
    let t0 = Instant::now();
    let mut b = Bucket::new(60, MINUTE, t0);
    for _ in 0..60 {
        b.take(1, t0).unwrap();
    }
    // Empty: the next unit comes after a sixtieth of the minute.
    assert_eq!(b.take(1, t0), Err(Wait::For(Duration::from_secs(1))));
    let later = t0 + Duration::from_millis(2500);
    b.take(1, later).unwrap();
    b.take(1, later).unwrap();
    assert!(b.take(1, later).is_err());
    // Never more than the capacity, however long it rests.
    let rested = t0 + Duration::from_secs(3600);
    assert_eq!(b.remaining(rested), 60);
    assert_eq!(b.take(61, rested), Err(Wait::Never));
}

#[test]
fn refunds_are_capped_and_charges_become_a_debt() {
    let t0 = Instant::now();
    let mut b = Bucket::new(1000, MINUTE, t0);
    b.take(800, t0).unwrap();
    // The request used 300 of the 800 it reserved.
    b.adjust(500, t0);
    assert_eq!(b.remaining(t0), 700);
    b.adjust(5000, t0);
    assert_eq!(b.remaining(t0), 1000);
    // It used 1500 more than reserved: later requests wait for the debt to refill.
    b.take(1000, t0).unwrap();
    b.adjust(-500, t0);
    assert_eq!(b.remaining(t0), 0);
    assert_eq!(b.take(100, t0), Err(Wait::For(Duration::from_secs(36))));
    assert_eq!(b.reset(), Duration::from_secs(90));
}

#[test]
fn resizing_keeps_what_is_left_up_to_the_new_capacity() {
    let t0 = Instant::now();
    let mut b = Bucket::new(100, MINUTE, t0);
    b.take(30, t0).unwrap();
    b.resize(50, t0);
    assert_eq!(b.remaining(t0), 50);
    b.resize(200, t0);
    assert_eq!((b.remaining(t0), b.capacity()), (50, 200));
}

#[test]
fn a_lease_asks_for_the_need_plus_one_percent() {
    let t0 = Instant::now();
    let mut lease = Lease::default();
    assert_eq!(lease.ask(1, 60), Some(Ask { min: 1, want: 1 }));
    assert_eq!(lease.ask(10, 5000), Some(Ask { min: 10, want: 60 }));
    lease.granted(60, 4940, t0);
    assert_eq!(lease.ask(10, 5000), None);
    lease.held -= 70;
    // A debt is paid before the need.
    assert_eq!(lease.ask(5, 5000), Some(Ask { min: 15, want: 65 }));
}

#[test]
fn an_empty_shared_bucket_is_not_asked_until_it_can_have_refilled() {
    let t0 = Instant::now();
    let mut lease = Lease::default();
    let rpm = (60, MINUTE);
    assert!(lease.may_fit(1, rpm, t0).is_ok());
    lease.granted(0, 0, t0);
    assert_eq!(
        lease.may_fit(1, rpm, t0),
        Err(Wait::For(Duration::from_secs(1)))
    );
    assert!(lease.may_fit(1, rpm, t0 + Duration::from_secs(1)).is_ok());
    assert_eq!(lease.may_fit(61, rpm, t0), Err(Wait::Never));
    assert_eq!(lease.remaining(rpm, t0 + Duration::from_secs(2)), 2);
}
