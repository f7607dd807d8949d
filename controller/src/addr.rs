//! Address types the annotation and CNI results share: CIDR prefixes and MAC addresses.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddrError {
    #[error("{0:?} is not in CIDR form (address/prefix)")]
    NotCidr(String),
    #[error("{0:?} is not an IP address")]
    BadAddress(String),
    #[error("prefix length in {0:?} is out of range")]
    BadPrefix(String),
    #[error("{0:?} is not a MAC address (six hex octets separated by ':')")]
    BadMac(String),
}

/// An address with its prefix length, as CNI writes them (`198.18.0.5/24`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpPrefix {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl IpPrefix {
    pub fn max_prefix(addr: &IpAddr) -> u8 {
        if addr.is_ipv4() { 32 } else { 128 }
    }

    pub fn is_ipv4(&self) -> bool {
        self.addr.is_ipv4()
    }
}

impl FromStr for IpPrefix {
    type Err = AddrError;
    fn from_str(s: &str) -> Result<Self, AddrError> {
        let (addr, prefix) = s
            .split_once('/')
            .ok_or_else(|| AddrError::NotCidr(s.to_owned()))?;
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| AddrError::BadAddress(s.to_owned()))?;
        if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_digit()) {
            return Err(AddrError::BadPrefix(s.to_owned()));
        }
        let prefix: u8 = prefix
            .parse()
            .map_err(|_| AddrError::BadPrefix(s.to_owned()))?;
        if prefix > Self::max_prefix(&addr) {
            return Err(AddrError::BadPrefix(s.to_owned()));
        }
        Ok(Self { addr, prefix })
    }
}

impl fmt::Display for IpPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl Serialize for IpPrefix {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for IpPrefix {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// A 48-bit Ethernet address, printed in the lowercase colon form the kernel uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MacAddr(pub [u8; 6]);

impl FromStr for MacAddr {
    type Err = AddrError;
    fn from_str(s: &str) -> Result<Self, AddrError> {
        let bad = || AddrError::BadMac(s.to_owned());
        let mut octets = [0u8; 6];
        let mut parts = s.split(':');
        for octet in &mut octets {
            let part = parts.next().ok_or_else(bad)?;
            if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad());
            }
            *octet = u8::from_str_radix(part, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(Self(octets))
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl Serialize for MacAddr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MacAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_round_trip_and_reject_bad_lengths() {
        let p: IpPrefix = "198.18.0.5/24".parse().unwrap();
        assert_eq!(p.to_string(), "198.18.0.5/24");
        let v6: IpPrefix = "fd00::5/64".parse().unwrap();
        assert!(!v6.is_ipv4());
        assert!("198.18.0.5".parse::<IpPrefix>().is_err());
        assert!("198.18.0.5/33".parse::<IpPrefix>().is_err());
        assert!("fd00::1/129".parse::<IpPrefix>().is_err());
        assert!("nope/24".parse::<IpPrefix>().is_err());
        assert!("198.18.0.5/+24".parse::<IpPrefix>().is_err());
    }

    #[test]
    fn macs_need_six_colon_separated_octets() {
        let m: MacAddr = "C2:11:22:33:44:55".parse().unwrap();
        assert_eq!(m.to_string(), "c2:11:22:33:44:55");
        for bad in [
            "c2:11:22:33:44",
            "c2:11:22:33:44:55:66",
            "c2-11-22-33-44-55",
            "zz:11:22:33:44:55",
            "c2:1:22:33:44:555",
            "+1:+2:+3:+4:+5:+6",
        ] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad} accepted");
        }
    }
}
