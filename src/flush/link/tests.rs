use super::whole_request_refused;

fn batch(keys: &[&str]) -> Vec<(String, bool)> {
    keys.iter().map(|k| (k.to_string(), true)).collect()
}

#[test]
fn a_message_naming_no_key_refuses_the_request() {
    let b = batch(&["alice", "bob"]);
    assert!(whole_request_refused(
        &b,
        "400 rejected: segment is not a big segment",
        None,
        &[]
    ));
    assert!(!whole_request_refused(
        &b,
        "400 rejected: invalid context key bob",
        None,
        &[]
    ));
}

#[test]
fn both_halves_refused_alike_refuse_the_request() {
    let msg = "400 rejected: alice and bob are fine but the body is not";
    let left = vec![Some(msg.to_string())];
    assert!(whole_request_refused(
        &batch(&["bob"]),
        msg,
        Some((0, true)),
        &left
    ));
    assert!(!whole_request_refused(
        &batch(&["bob"]),
        "400 rejected: bad key bob",
        Some((0, true)),
        &[Some("400 rejected: bad key alice".into())]
    ));
}
