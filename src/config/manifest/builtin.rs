//! The manifests built into the bridge.

/// The built-in manifests, vendored from LaunchDarkly's integration-framework
/// repository unchanged: (integration key, manifest JSON).
pub const BUILTIN: &[(&str, &str)] = &[
    (
        "amplitude",
        include_str!("../../../manifests/amplitude.json"),
    ),
    (
        "census-synced-segments",
        include_str!("../../../manifests/census-synced-segments.json"),
    ),
    (
        "example-synced-segment-integration1",
        include_str!("../../../manifests/example-synced-segment-integration1.json"),
    ),
    (
        "example-synced-segment-integration2",
        include_str!("../../../manifests/example-synced-segment-integration2.json"),
    ),
    ("fulcrum", include_str!("../../../manifests/fulcrum.json")),
    (
        "heap-inbound",
        include_str!("../../../manifests/heap-inbound.json"),
    ),
    (
        "hightouch",
        include_str!("../../../manifests/hightouch.json"),
    ),
    (
        "rudderstack",
        include_str!("../../../manifests/rudderstack.json"),
    ),
    (
        "segment-audiences",
        include_str!("../../../manifests/segment-audiences.json"),
    ),
    (
        "sumatra-synced-segments",
        include_str!("../../../manifests/sumatra-synced-segments.json"),
    ),
    (
        "tealium-synced-segments",
        include_str!("../../../manifests/tealium-synced-segments.json"),
    ),
    ("zeotap", include_str!("../../../manifests/zeotap.json")),
];
