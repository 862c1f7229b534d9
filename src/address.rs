//! The address to listen on, as written in `--listen` or the TOML key
//! `listen`: a host name or an IP address, and a port.

use std::{
    fmt,
    net::{SocketAddr, ToSocketAddrs},
    str::FromStr,
};

use serde::{Deserialize, Serialize};

/// `HOST:PORT` to listen on. The host is a name (`localhost`) or an IP
/// address, IPv6 in brackets (`[::1]:7400`); a name is resolved when the
/// broker starts, and the broker listens on every address it resolves to.
/// Port 0 picks a free port.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ListenAddr {
    host: String,
    port: u16,
}

/// Why a text is not a `HOST:PORT` address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ListenAddrError {
    /// There is no `:PORT` after the host.
    #[error("`{0}` has no port (expected HOST:PORT, e.g. localhost:7400)")]
    MissingPort(String),
    /// The port is not a number from 0 to 65535.
    #[error("`{0}` has no valid port (expected a number from 0 to 65535)")]
    BadPort(String),
    /// Nothing comes before `:PORT`.
    #[error("`{0}` has no host (expected HOST:PORT, e.g. 0.0.0.0:7400)")]
    MissingHost(String),
    /// An IPv6 address without the brackets that set it apart from the port.
    #[error("`{0}`: write an IPv6 address in brackets, e.g. [::1]:7400")]
    UnbracketedIpv6(String),
}

impl ListenAddr {
    /// The host name or IP address, without brackets.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port; 0 picks a free one.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Every address the host resolves to, with the port, in the resolver's
    /// order and without repeats. An IP address resolves to itself.
    pub fn resolve(&self) -> std::io::Result<Vec<SocketAddr>> {
        let mut found: Vec<SocketAddr> = Vec::new();
        for addr in (self.host.as_str(), self.port).to_socket_addrs()? {
            if !found.contains(&addr) {
                found.push(addr);
            }
        }
        if found.is_empty() {
            return Err(std::io::Error::new(std::io::ErrorKind::NotFound, "no addresses"));
        }
        Ok(found)
    }
}

impl FromStr for ListenAddr {
    type Err = ListenAddrError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if let Ok(addr) = text.parse::<SocketAddr>() {
            return Ok(addr.into());
        }
        let Some((host, port)) = text.rsplit_once(':').filter(|_| !text.ends_with(']')) else {
            return Err(ListenAddrError::MissingPort(text.into()));
        };
        if host.contains(':') {
            return Err(ListenAddrError::UnbracketedIpv6(text.into()));
        }
        if host.is_empty() {
            return Err(ListenAddrError::MissingHost(text.into()));
        }
        let port = port.parse().map_err(|_| ListenAddrError::BadPort(text.into()))?;
        Ok(Self { host: host.into(), port })
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl From<SocketAddr> for ListenAddr {
    fn from(addr: SocketAddr) -> Self {
        Self { host: addr.ip().to_string(), port: addr.port() }
    }
}

impl TryFrom<String> for ListenAddr {
    type Error = ListenAddrError;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

impl From<ListenAddr> for String {
    fn from(addr: ListenAddr) -> Self {
        addr.to_string()
    }
}

/// Where the monitoring port listens (`--http`, key `http`): `HOST:PORT`,
/// or `off`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum HttpAddr {
    /// No monitoring port.
    Off,
    /// Listen here.
    At(ListenAddr),
}

impl HttpAddr {
    /// The address, unless it is off.
    pub fn addr(&self) -> Option<&ListenAddr> {
        match self {
            Self::Off => None,
            Self::At(addr) => Some(addr),
        }
    }
}

impl FromStr for HttpAddr {
    type Err = ListenAddrError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "off" | "" => Ok(Self::Off),
            _ => text.parse().map(Self::At),
        }
    }
}

impl fmt::Display for HttpAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Off => f.write_str("off"),
            Self::At(addr) => addr.fmt(f),
        }
    }
}

impl TryFrom<String> for HttpAddr {
    type Error = ListenAddrError;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

impl From<HttpAddr> for String {
    fn from(addr: HttpAddr) -> Self {
        addr.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ListenAddr, ListenAddrError> {
        text.parse()
    }

    #[test]
    fn ip_addresses_and_names_parse_and_print_back() {
        for text in ["127.0.0.1:7400", "[::1]:0", "localhost:7400", "broker.example:1"] {
            assert_eq!(parse(text).expect(text).to_string(), text);
        }
        assert_eq!(parse("[::1]:9").expect("v6").host(), "::1");
    }

    #[test]
    fn malformed_addresses_are_refused_with_the_reason() {
        assert_eq!(parse("localhost"), Err(ListenAddrError::MissingPort("localhost".into())));
        assert_eq!(parse("localhost:x"), Err(ListenAddrError::BadPort("localhost:x".into())));
        assert_eq!(parse("h:70000"), Err(ListenAddrError::BadPort("h:70000".into())));
        assert_eq!(parse(":7400"), Err(ListenAddrError::MissingHost(":7400".into())));
        assert_eq!(parse("::1:7400"), Err(ListenAddrError::UnbracketedIpv6("::1:7400".into())));
        assert_eq!(parse("[::1]"), Err(ListenAddrError::MissingPort("[::1]".into())));
    }

    #[test]
    fn toml_holds_it_as_a_string() {
        #[derive(Debug, Deserialize, Serialize)]
        struct Doc {
            listen: ListenAddr,
        }
        let doc: Doc = toml::from_str("listen = \"localhost:0\"").expect("a host name");
        assert_eq!(doc.listen.host(), "localhost");
        assert_eq!(toml::to_string(&doc).expect("serialize").trim(), "listen = \"localhost:0\"");
        assert!(toml::from_str::<Doc>("listen = \"localhost\"").is_err());
    }

    #[test]
    fn the_monitoring_address_may_be_off() {
        assert_eq!("off".parse::<HttpAddr>(), Ok(HttpAddr::Off));
        let at = "127.0.0.1:0".parse::<HttpAddr>().expect("an address");
        assert_eq!(at.addr().map(ListenAddr::port), Some(0));
        assert_eq!(at.to_string(), "127.0.0.1:0");
        assert!("nowhere".parse::<HttpAddr>().is_err());
    }

    #[test]
    fn an_ip_address_resolves_to_itself() {
        let addr = parse("127.0.0.1:0").expect("ip");
        assert_eq!(addr.resolve().expect("no lookup"), ["127.0.0.1:0".parse().expect("addr")]);
    }
}
