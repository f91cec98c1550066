//! Networks for Box: bridge networks over netlink with NAT and published ports in Box's own
//! nftables table (rootful), pasta or slirp4netns for rootless boxes, and the address
//! arithmetic and port specs they share. The engine keeps the state (which networks exist,
//! which box has which address) in its database; this crate makes the kernel match it.

pub mod bridge;
pub mod firewall;
pub mod netlink;
pub mod ports;
pub mod rootless;
pub mod subnet;

/// What went wrong while setting up or tearing down a network.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// A system call or file operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The kernel refused a netlink request.
    #[error("{what}: {}", std::io::Error::from_raw_os_error(*errno))]
    Netlink {
        /// What was asked.
        what: String,
        /// The kernel's errno.
        errno: i32,
    },
    /// nft failed or is missing.
    #[error("{0}")]
    Firewall(String),
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

impl NetError {
    /// An I/O error with what was being done.
    pub fn io(what: &str, source: std::io::Error) -> NetError {
        NetError::Io {
            what: what.to_string(),
            source,
        }
    }
}

/// This crate's results.
pub type Result<T> = std::result::Result<T, NetError>;
