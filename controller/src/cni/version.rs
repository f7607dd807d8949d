//! CNI protocol versions Plexus speaks, and version selection (SPECS §2).
//!
//! Plexus supports the result shapes of 0.3.0 through 1.1.0. 0.1.0/0.2.0 (the old `ip4`/`ip6`
//! results) are not supported: no maintained plugin is limited to them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A CNI spec version Plexus can speak, ordered oldest to newest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CniVersion {
    V0_3_0,
    V0_3_1,
    V0_4_0,
    V1_0_0,
    V1_1_0,
}

/// A version string Plexus cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VersionError {
    /// A well-formed `X.Y.Z` that is not one of the supported versions (CNI code 1).
    #[error("incompatible CNI version {0:?}: Plexus supports {supported}", supported = supported_list())]
    Unsupported(String),
    /// Not a version string at all (CNI code 6).
    #[error("{0:?} is not a CNI version (expected X.Y.Z); Plexus supports {supported}", supported = supported_list())]
    Malformed(String),
}

impl VersionError {
    /// The CNI error code for this failure: 1 (incompatible version) or 6 (decoding failure).
    pub fn cni_code(&self) -> u32 {
        match self {
            Self::Unsupported(_) => 1,
            Self::Malformed(_) => 6,
        }
    }
}

fn supported_list() -> String {
    CniVersion::ALL.map(CniVersion::as_str).join(", ")
}

/// `X.Y.Z` with decimal components (no pre-release or build suffix).
fn looks_like_semver(s: &str) -> bool {
    let parts: Vec<&str> = s.split('.').collect();
    parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

impl CniVersion {
    /// Every supported version, oldest first.
    pub const ALL: [CniVersion; 5] = [
        CniVersion::V0_3_0,
        CniVersion::V0_3_1,
        CniVersion::V0_4_0,
        CniVersion::V1_0_0,
        CniVersion::V1_1_0,
    ];
    /// The newest version Plexus speaks.
    pub const LATEST: CniVersion = CniVersion::V1_1_0;

    /// Parses one of the exact strings "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0".
    pub fn parse(s: &str) -> Result<Self, VersionError> {
        Self::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| {
                if looks_like_semver(s) {
                    VersionError::Unsupported(s.to_owned())
                } else {
                    VersionError::Malformed(s.to_owned())
                }
            })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::V0_3_0 => "0.3.0",
            Self::V0_3_1 => "0.3.1",
            Self::V0_4_0 => "0.4.0",
            Self::V1_0_0 => "1.0.0",
            Self::V1_1_0 => "1.1.0",
        }
    }

    /// CHECK exists from 0.4.0 on.
    pub fn supports_check(self) -> bool {
        self >= Self::V0_4_0
    }

    /// STATUS and GC exist from 1.1.0 on.
    pub fn supports_status_and_gc(self) -> bool {
        self >= Self::V1_1_0
    }

    /// From 0.4.0 on, DEL carries the ADD result as `prevResult`.
    pub fn del_gets_prev_result(self) -> bool {
        self >= Self::V0_4_0
    }
}

impl fmt::Display for CniVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CniVersion {
    type Err = VersionError;
    fn from_str(s: &str) -> Result<Self, VersionError> {
        Self::parse(s)
    }
}

impl Serialize for CniVersion {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for CniVersion {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// The highest version this side supports among a config's `cniVersion` and `cniVersions`
/// (CNI §1 Version considerations). Entries that are unknown or newer than 1.1.0 (e.g. "0.2.0",
/// "2.0.0") are skipped, as libcni does; `None` if nothing usable remains.
pub fn pick_config_version(
    cni_version: Option<&str>,
    cni_versions: &[String],
) -> Option<CniVersion> {
    cni_version
        .into_iter()
        .chain(cni_versions.iter().map(String::as_str))
        .filter_map(|s| CniVersion::parse(s).ok())
        .max()
}

/// The version a config declares, held to the letter: every string in `cniVersion` and
/// `cniVersions` must be a version string and one of them a version Plexus speaks. Stricter
/// than [`pick_config_version`], which ADD uses and which skips what it cannot use; this is for
/// checking a config before it reaches a node. `Ok(None)`: the config declares no version
/// (ADD then asks the plugin).
pub fn declared_version(
    cni_version: Option<&str>,
    cni_versions: &[String],
) -> Result<Option<CniVersion>, VersionError> {
    let mut declared = cni_version
        .into_iter()
        .chain(cni_versions.iter().map(String::as_str));
    let Some(first) = declared.next() else {
        return Ok(None);
    };
    if let Some(bad) = std::iter::once(first)
        .chain(declared)
        .find(|s| !looks_like_semver(s))
    {
        return Err(VersionError::Malformed(bad.to_owned()));
    }
    pick_config_version(cni_version, cni_versions)
        .map(Some)
        .ok_or_else(|| VersionError::Unsupported(first.to_owned()))
}

/// The highest version both in Plexus's list and in a plugin's VERSION answer
/// (`supportedVersions`); `None` if they share none.
pub fn highest_common(plugin_supported: &[String]) -> Option<CniVersion> {
    plugin_supported
        .iter()
        .filter_map(|s| CniVersion::parse(s).ok())
        .max()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn every_supported_version_round_trips_through_its_string() {
        for v in CniVersion::ALL {
            assert_eq!(CniVersion::parse(v.as_str()), Ok(v));
            assert_eq!(v.to_string(), v.as_str());
            assert_eq!(v.as_str().parse::<CniVersion>(), Ok(v));
        }
        assert_eq!(CniVersion::LATEST, CniVersion::V1_1_0);
        assert_eq!(CniVersion::ALL.iter().max(), Some(&CniVersion::LATEST));
    }

    #[test]
    fn versions_are_ordered_oldest_to_newest() {
        let mut sorted = CniVersion::ALL;
        sorted.sort();
        assert_eq!(sorted, CniVersion::ALL);
        assert!(CniVersion::V0_3_1 < CniVersion::V0_4_0);
        assert!(CniVersion::V1_0_0 < CniVersion::V1_1_0);
    }

    #[test]
    fn unknown_versions_are_rejected_with_the_supported_list() {
        let cases = [
            ("0.2.0", 1),
            ("0.1.0", 1),
            ("2.0.0", 1),
            ("1.2.0", 1),
            ("", 6),
            ("1.0", 6),
            ("v1.0.0", 6),
            ("1.0.0-rc1", 6),
            (" 1.0.0", 6),
            ("1..0", 6),
        ];
        for (input, code) in cases {
            let err = CniVersion::parse(input).expect_err(input);
            assert_eq!(err.cni_code(), code, "{input}");
            let msg = err.to_string();
            assert!(msg.contains("0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0"), "{msg}");
            assert!(msg.contains(&format!("{input:?}")), "{msg}");
        }
    }

    #[test]
    fn feature_gates_follow_the_spec_versions() {
        use CniVersion::*;
        let table = [
            (V0_3_0, false, false, false),
            (V0_3_1, false, false, false),
            (V0_4_0, true, false, true),
            (V1_0_0, true, false, true),
            (V1_1_0, true, true, true),
        ];
        for (v, check, status_gc, del_prev) in table {
            assert_eq!(v.supports_check(), check, "{v}");
            assert_eq!(v.supports_status_and_gc(), status_gc, "{v}");
            assert_eq!(v.del_gets_prev_result(), del_prev, "{v}");
        }
    }

    #[test]
    fn versions_serialize_as_plain_strings() {
        assert_eq!(
            serde_json::to_string(&CniVersion::V0_4_0).unwrap(),
            "\"0.4.0\""
        );
        let v: CniVersion = serde_json::from_str("\"1.1.0\"").unwrap();
        assert_eq!(v, CniVersion::V1_1_0);
        let err = serde_json::from_str::<CniVersion>("\"0.2.0\"").unwrap_err();
        assert!(
            err.to_string().contains("incompatible CNI version"),
            "{err}"
        );
        assert!(serde_json::from_str::<CniVersion>("1").is_err());
    }

    #[test]
    fn config_version_is_the_highest_usable_of_both_keys() {
        let cases: &[(Option<&str>, &[&str], Option<CniVersion>)] = &[
            (
                Some("0.4.0"),
                &["1.0.0", "1.1.0", "2.0.0"],
                Some(CniVersion::V1_1_0),
            ),
            (None, &["0.3.1", "1.0.0"], Some(CniVersion::V1_0_0)),
            (Some("0.3.1"), &[], Some(CniVersion::V0_3_1)),
            (Some("1.0.0"), &["0.4.0"], Some(CniVersion::V1_0_0)),
            (None, &[], None),
            (Some("0.2.0"), &["2.0.0", "garbage"], None),
            (Some(""), &[], None),
            (Some("2.0.0"), &["0.4.0"], Some(CniVersion::V0_4_0)),
        ];
        for (version, versions, want) in cases {
            assert_eq!(
                pick_config_version(*version, &strings(versions)),
                *want,
                "{version:?} + {versions:?}"
            );
        }
    }

    #[test]
    fn a_declared_version_must_be_well_formed_and_one_plexus_speaks() {
        type Case<'a> = (
            Option<&'a str>,
            &'a [&'a str],
            Result<Option<CniVersion>, u32>,
        );
        let cases: &[Case<'_>] = &[
            (Some("1.0.0"), &[], Ok(Some(CniVersion::V1_0_0))),
            (Some("2.0.0"), &["0.4.0"], Ok(Some(CniVersion::V0_4_0))),
            (Some("0.2.0"), &["1.1.0"], Ok(Some(CniVersion::V1_1_0))),
            (None, &["1.0.0"], Ok(Some(CniVersion::V1_0_0))),
            (None, &[], Ok(None)),
            (Some("0.2.0"), &[], Err(1)),
            (Some("2.0.0"), &["3.0.0"], Err(1)),
            (Some("1.0"), &[], Err(6)),
            (Some(""), &[], Err(6)),
            (Some("1.0.0"), &["v1.1.0"], Err(6)),
        ];
        for (version, versions, want) in cases {
            let got = declared_version(*version, &strings(versions)).map_err(|e| e.cni_code());
            assert_eq!(got, *want, "{version:?} + {versions:?}");
        }
        let error = declared_version(Some("0.2.0"), &[])
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("\"0.2.0\"") && error.contains("1.1.0"),
            "{error}"
        );
    }

    #[test]
    fn common_version_with_a_plugin_is_the_highest_shared_one() {
        let cases: &[(&[&str], Option<CniVersion>)] = &[
            (
                &[
                    "0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0",
                ],
                Some(CniVersion::V1_1_0),
            ),
            (
                &["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0"],
                Some(CniVersion::V1_0_0),
            ),
            (&["0.3.1", "0.1.0"], Some(CniVersion::V0_3_1)),
            (&["1.1.0", "2.0.0"], Some(CniVersion::V1_1_0)),
            (&["0.1.0", "0.2.0"], None),
            (&[], None),
        ];
        for (supported, want) in cases {
            assert_eq!(highest_common(&strings(supported)), *want, "{supported:?}");
        }
    }
}
