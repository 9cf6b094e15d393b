//! The topology is removed on drop, and partitions really cut traffic between members.

use jepsen::netns::{sh, Net};

fn our_namespaces() -> Vec<String> {
    let pid = std::process::id();
    sh("ip", &["netns", "list"])
        .expect("ip netns list")
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(&format!("rkj-{pid}-")))
        .map(str::to_string)
        .collect()
}

#[test]
fn namespaces_are_created_partitioned_healed_and_removed() {
    let net = Net::create(3).expect("creating the test network (needs root and iptables)");
    assert_eq!(our_namespaces().len(), 4, "3 members + the switch");
    net.cut(0, 1).unwrap();
    assert_eq!(net.rule_count(0).unwrap(), 1);
    assert_eq!(net.rule_count(1).unwrap(), 1);
    assert_eq!(net.rule_count(2).unwrap(), 0);
    net.heal().unwrap();
    assert_eq!(net.rule_count(0).unwrap(), 0);
    drop(net);
    assert!(
        our_namespaces().is_empty(),
        "left behind: {:?}",
        our_namespaces()
    );
}
