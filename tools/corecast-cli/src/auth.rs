//! How the command line authenticates and connects with TLS: the
//! credential and the TLS settings its flags and environment say, and the
//! `hash-password` and `hash-token` subcommands that make what the broker's
//! `[[users]]` entries hold.

use std::{
    fs,
    io::{self, BufRead, IsTerminal, Read, Write},
    path::Path,
    sync::OnceLock,
};

use anyhow::{bail, Context};
use argon2::{
    password_hash::{rand_core::OsRng, PasswordHasher, SaltString},
    Argon2,
};
use corecast_client::{Credentials, Pem, TlsOptions};
use sha2::{Digest, Sha256};

use crate::cli::Connection;

/// The environment variable that holds the password of `--user`.
pub const PASSWORD_ENV: &str = "CORECAST_PASSWORD";
/// The environment variable that holds a bearer token.
pub const BEARER_ENV: &str = "CORECAST_BEARER";
/// The environment variable that holds a JWT.
pub const JWT_ENV: &str = "CORECAST_JWT";

/// What to authenticate with: `--user` (and its password), `--bearer-file`,
/// `--jwt-file`, `--auth-token` (or `CORECAST_AUTH_TOKEN`), then
/// `CORECAST_BEARER`, then `CORECAST_JWT`; nothing when none is given.
/// Worked out once (a password is asked for once), then remembered.
pub fn credentials(conn: &Connection) -> anyhow::Result<Credentials> {
    static SETTLED: OnceLock<Credentials> = OnceLock::new();
    if let Some(settled) = SETTLED.get() {
        return Ok(settled.clone());
    }
    let credentials = credentials_of(conn)?;
    Ok(SETTLED.get_or_init(|| credentials).clone())
}

fn credentials_of(conn: &Connection) -> anyhow::Result<Credentials> {
    if let Some(user) = &conn.user {
        return Ok(Credentials::password(user, password(conn, user)?));
    }
    if let Some(path) = &conn.bearer_file {
        return Ok(Credentials::bearer(first_line_of_file(path, "bearer token")?));
    }
    if let Some(path) = &conn.jwt_file {
        return Ok(Credentials::jwt(jwt_text(first_line_of_file(path, "JWT")?)?));
    }
    if let Some(token) = &conn.auth_token {
        return Ok(Credentials::token(token));
    }
    if let Some(token) = env_value(BEARER_ENV) {
        return Ok(Credentials::bearer(token));
    }
    if let Some(jwt) = env_value(JWT_ENV) {
        return Ok(Credentials::jwt(jwt));
    }
    Ok(Credentials::None)
}

/// The password of `user`: `--password-file`, else `CORECAST_PASSWORD`, else
/// a line of standard input (asked for on a terminal).
fn password(conn: &Connection, user: &str) -> anyhow::Result<Vec<u8>> {
    if let Some(path) = &conn.password_file {
        return first_line_of_file(path, "password");
    }
    if let Some(password) = std::env::var_os(PASSWORD_ENV) {
        return Ok(password.into_encoded_bytes());
    }
    let stdin = io::stdin();
    if stdin.is_terminal() {
        eprint!("password for {user} (shown as typed): ");
        let _ = io::stderr().flush();
    }
    let line = read_line(&mut stdin.lock()).context("cannot read the password")?;
    match line {
        Some(line) => Ok(line),
        None => bail!(
            "--user {user} needs a password: set {PASSWORD_ENV}, pass --password-file FILE, or \
             write it on standard input"
        ),
    }
}

/// A variable of the environment without a final newline, if not empty.
fn env_value(name: &str) -> Option<String> {
    let value = std::env::var(name).ok()?;
    let len = trim_newline(value.as_bytes()).len();
    (len > 0).then(|| value[..len].to_owned())
}

fn jwt_text(bytes: Vec<u8>) -> anyhow::Result<String> {
    String::from_utf8(bytes).context("the JWT is not UTF-8 text")
}

/// The first line of the file at `path`, without its line ending.
fn first_line_of_file(path: &Path, what: &str) -> anyhow::Result<Vec<u8>> {
    let bytes = fs::read(path)
        .with_context(|| format!("cannot read the {what} file {}", path.display()))?;
    let line = read_line(&mut &bytes[..])?.unwrap_or_default();
    if line.is_empty() {
        bail!("the {what} file {} is empty", path.display());
    }
    Ok(line)
}

/// One line, without its line ending; `None` at the end of the input.
fn read_line(input: &mut impl BufRead) -> io::Result<Option<Vec<u8>>> {
    let mut line = Vec::new();
    if input.read_until(b'\n', &mut line)? == 0 {
        return Ok(None);
    }
    let len = trim_newline(&line).len();
    line.truncate(len);
    Ok(Some(line))
}

/// `bytes` without a final `\n` or `\r\n`.
fn trim_newline(bytes: &[u8]) -> &[u8] {
    let bytes = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    bytes.strip_suffix(b"\r").unwrap_or(bytes)
}

/// The TLS settings of the flags, or `None` for plain TCP. TLS is on with
/// `--tls`, `--tls-ca` or a client certificate, and always needs
/// `--tls-ca`.
pub fn tls(conn: &Connection) -> anyhow::Result<Option<TlsOptions>> {
    let asked = conn.tls || conn.tls_ca.is_some() || conn.tls_cert.is_some();
    if !asked {
        if conn.tls_server_name.is_some() {
            bail!("--tls-server-name needs TLS: add --tls-ca FILE");
        }
        return Ok(None);
    }
    let Some(ca) = &conn.tls_ca else {
        bail!(
            "TLS needs --tls-ca FILE (or CORECAST_TLS_CA): the CA certificates, in PEM, that \
             signed the broker's certificate; this tool does not use the system's CA roots"
        );
    };
    let mut tls = TlsOptions::new(Pem::file(ca));
    if let (Some(cert), Some(key)) = (&conn.tls_cert, &conn.tls_key) {
        tls = tls.client_cert(Pem::file(cert), Pem::file(key));
    }
    if let Some(name) = &conn.tls_server_name {
        tls = tls.server_name(name);
    }
    Ok(Some(tls))
}

/// Whether the flags ask for more than the plain, token-only connection
/// that `stats` without `--http` opens by itself.
pub fn needs_the_client(conn: &Connection) -> bool {
    conn.tls
        || conn.tls_ca.is_some()
        || conn.tls_cert.is_some()
        || conn.user.is_some()
        || conn.bearer_file.is_some()
        || conn.jwt_file.is_some()
        || (conn.auth_token.is_none() && (env_value(BEARER_ENV).or(env_value(JWT_ENV)).is_some()))
}

/// `hash-password`: the argon2id PHC string of the first line of standard
/// input.
pub fn hash_password() -> anyhow::Result<()> {
    let stdin = io::stdin();
    if stdin.is_terminal() {
        eprint!("password to hash (shown as typed): ");
        let _ = io::stderr().flush();
    }
    let password = read_line(&mut stdin.lock()).context("cannot read the password")?;
    let password = password.unwrap_or_default();
    if password.is_empty() {
        bail!("no password on standard input");
    }
    println!("{}", phc_of(&password)?);
    Ok(())
}

/// The argon2id PHC string of `password`, default parameters, random salt.
fn phc_of(password: &[u8]) -> anyhow::Result<String> {
    let salt = SaltString::generate(&mut OsRng);
    let hash = Argon2::default()
        .hash_password(password, &salt)
        .map_err(|e| anyhow::anyhow!("cannot hash the password: {e}"))?;
    Ok(hash.to_string())
}

/// `hash-token`: the SHA-256 (hex) of standard input without a final
/// newline.
pub fn hash_token() -> anyhow::Result<()> {
    let mut token = Vec::new();
    io::stdin().lock().read_to_end(&mut token).context("cannot read the token")?;
    let token = trim_newline(&token);
    if token.is_empty() {
        bail!("no token on standard input");
    }
    println!("{}", sha256_hex(token));
    Ok(())
}

/// The SHA-256 of `bytes`, lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use argon2::{password_hash::PasswordHash, PasswordVerifier};

    use super::*;

    #[test]
    fn lines_lose_their_ending_only() {
        let mut input = &b"pa:ss word\r\nnext\n"[..];
        assert_eq!(read_line(&mut input).ok().flatten(), Some(b"pa:ss word".to_vec()));
        assert_eq!(read_line(&mut input).ok().flatten(), Some(b"next".to_vec()));
        assert_eq!(read_line(&mut input).ok().flatten(), None);
        assert_eq!(trim_newline(b"tok\n\n"), b"tok\n");
    }

    #[test]
    fn a_phc_string_verifies_with_argon2() {
        let phc = phc_of(b"hunter2").expect("hashed");
        assert!(phc.starts_with("$argon2id$"), "{phc}");
        let parsed = PasswordHash::new(&phc).expect("a PHC string");
        assert!(Argon2::default().verify_password(b"hunter2", &parsed).is_ok());
        assert!(Argon2::default().verify_password(b"hunter3", &parsed).is_err());
        assert_ne!(phc, phc_of(b"hunter2").expect("hashed"), "a random salt");
    }

    #[test]
    fn sha256_of_a_known_vector() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
