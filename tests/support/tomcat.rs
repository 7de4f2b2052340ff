//! A real Tomcat (Debian's `tomcat10-common` + `libtomcat10-java`, installed by `make tomcat`)
//! standing in for Jira behind Envoy, reachable only over mutual TLS.
//!
//! [`Tomcat::start`] makes a private CATALINA_BASE in a fresh temp directory: the connector of
//! `tests/tomcat/server.xml` (127.0.0.1 only, TLS, client certificate required), the echo
//! servlet of `tests/tomcat/Echo.java` (compiled with `javac`), and the certificates of a [`Pki`]
//! (made with `openssl` and `keytool`); the class and the certificates are made once per test
//! process, in `target/tomcat-tests/<pid>`. As root it runs Tomcat as `nobody` (setpriv).
//! Dropping it kills Tomcat's whole process group and removes the directory.
//!
//! Missing tools are a failed test, never a skipped one.

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::envoy::UpstreamTls;
use super::repo_root;

/// CATALINA_HOME of Debian's `tomcat10-common`.
pub const CATALINA_HOME: &str = "/usr/share/tomcat10";
/// The Servlet API of Debian's `libtomcat10-java`, to compile the servlet against.
pub const SERVLET_API_JAR: &str = "/usr/share/java/tomcat10-servlet-api.jar";
/// The name Tomcat's certificate carries (with IP 127.0.0.1) and Envoy checks (SNI too).
pub const SERVER_NAME: &str = "localhost";
/// Subject of Envoy's client certificate, as the servlet reports it (RFC 2253).
pub const ENVOY_SUBJECT: &str = "CN=envoy,O=atlassian-rest-auth tests";

const HOW: &str = "run `make tomcat` (apt-get install tomcat10-common libtomcat10-java and a JDK)";
const START_TIMEOUT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(50);
/// What Tomcat prints once every connector and webapp has started.
const STARTED: &str = "Server startup in";
const TRUSTSTORE_PASSWORD: &str = "ara-test-truststore";
const LOG_TAIL_LINES: usize = 60;
/// JVM options for a quick start of a tiny webapp (the tests' Tomcat lives for seconds).
const JAVA_OPTS: &str = "-Xshare:auto -XX:TieredStopAtLevel=1 -XX:+UseSerialGC -Xmx128m \
    -Djava.security.egd=file:/dev/urandom";

/// The certificates of one test process, in `<dir>`: a test CA that issues Tomcat's server
/// certificate and Envoy's client certificate, and a stranger with a client certificate from
/// a CA of its own. Keys are P-256 (quick to make), unencrypted PKCS#8 PEM; `trust.p12` (PKCS12, made by keytool) holds the
/// test CA only, as Tomcat's truststore.
#[derive(Debug, Clone)]
pub struct Pki {
    pub dir: PathBuf,
}

/// A client certificate and its key.
#[derive(Debug, Clone)]
pub struct ClientCert {
    pub certificate: PathBuf,
    pub key: PathBuf,
}

impl Pki {
    /// Makes every certificate in `dir` (created), with openssl and keytool.
    pub fn create(dir: &Path) -> Pki {
        fs::create_dir_all(dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        let pki = Pki {
            dir: dir.to_path_buf(),
        };
        pki.ca("ca", "atlassian-rest-auth test CA");
        pki.ca("stranger-ca", "someone else's CA");
        pki.leaf(
            "server",
            "ca",
            "/CN=localhost",
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth",
        );
        pki.leaf(
            "envoy",
            "ca",
            "/O=atlassian-rest-auth tests/CN=envoy",
            "extendedKeyUsage=clientAuth",
        );
        pki.leaf(
            "stranger",
            "stranger-ca",
            "/O=atlassian-rest-auth tests/CN=stranger",
            "extendedKeyUsage=clientAuth",
        );
        run(Command::new("keytool").args([
            "-importcert",
            "-noprompt",
            "-storetype",
            "PKCS12",
            "-alias",
            "envoy-ca",
            "-keystore",
            &pki.path("trust.p12"),
            "-storepass",
            TRUSTSTORE_PASSWORD,
            "-file",
            &pki.path("ca.pem"),
        ]));
        pki
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    /// A self-signed CA `<name>.pem` with key `<name>.key`, valid two days.
    fn ca(&self, name: &str, common_name: &str) {
        run(Command::new("openssl").args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN={common_name}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-keyout",
            &self.path(&format!("{name}.key")),
            "-out",
            &self.path(&format!("{name}.pem")),
        ]));
    }

    /// `<name>.pem` and `<name>.key`, issued by CA `<issuer>`, with the extensions `ext`.
    fn leaf(&self, name: &str, issuer: &str, subject: &str, ext: &str) {
        let ext_file = self.dir.join(format!("{name}.ext"));
        fs::write(&ext_file, format!("basicConstraints=CA:FALSE\n{ext}\n"))
            .unwrap_or_else(|e| panic!("write {}: {e}", ext_file.display()));
        let csr = self.path(&format!("{name}.csr"));
        run(Command::new("openssl").args([
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            subject,
            "-keyout",
            &self.path(&format!("{name}.key")),
            "-out",
            &csr,
        ]));
        run(Command::new("openssl").args([
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &self.path(&format!("{issuer}.pem")),
            "-CAkey",
            &self.path(&format!("{issuer}.key")),
            "-set_serial",
            &format!("0x{:x}", unique_number()),
            "-days",
            "2",
            "-extfile",
            &ext_file.display().to_string(),
            "-out",
            &self.path(&format!("{name}.pem")),
        ]));
    }

    /// The CA that issued Tomcat's certificate (and Envoy's).
    pub fn ca_pem(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// Envoy's client certificate, issued by the CA Tomcat trusts.
    pub fn envoy(&self) -> ClientCert {
        self.client("envoy")
    }

    /// A client certificate from a CA Tomcat does not trust.
    pub fn stranger(&self) -> ClientCert {
        self.client("stranger")
    }

    fn client(&self, name: &str) -> ClientCert {
        ClientCert {
            certificate: self.dir.join(format!("{name}.pem")),
            key: self.dir.join(format!("{name}.key")),
        }
    }

    /// The cluster TLS of an Envoy that connects to this Tomcat as `envoy`.
    pub fn envoy_upstream_tls(&self) -> UpstreamTls {
        let envoy = self.envoy();
        UpstreamTls {
            certificate_chain: envoy.certificate,
            private_key: envoy.key,
            trusted_ca: self.ca_pem(),
            server_name: SERVER_NAME.to_string(),
        }
    }
}

/// How the test Tomcat's connector treats client certificates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// `certificateVerification="required"`: the recipe.
    Required,
    /// `certificateVerification="optional"`: a broken recipe, for tests that prove the checks
    /// notice it.
    Optional,
}

/// A running Tomcat on 127.0.0.1:`port()`, HTTPS only, serving the echo servlet on every path.
pub struct Tomcat {
    child: Child,
    root: TempDir,
    port: u16,
    pki: Pki,
}

impl Tomcat {
    /// The recipe: a client certificate from the test CA is required.
    pub fn start() -> Tomcat {
        Self::start_with(ClientAuth::Required)
    }

    /// Builds a fresh CATALINA_BASE and certificates, starts Tomcat and waits (at most 30 s)
    /// until it has started; panics with its log otherwise.
    pub fn start_with(client_auth: ClientAuth) -> Tomcat {
        check_installed();
        let root = std::env::temp_dir().join(format!(
            "ara-tomcat-{}-{}",
            std::process::id(),
            unique_number()
        ));
        // Removed on drop, also when building the base fails before Tomcat runs.
        let root = TempDir::new(root);
        let pki = shared_pki();
        let base = root.0.join("base");
        let port = free_port();
        build_base(&base, &pki, port, client_auth);
        let log_path = base.join("logs/catalina.out");
        let log = fs::File::create(&log_path)
            .unwrap_or_else(|e| panic!("create {}: {e}", log_path.display()));
        let as_root = is_root();
        if as_root {
            // Tomcat writes logs/, work/ and temp/ and reads conf/ as `nobody`.
            run(Command::new("chown")
                .args(["-R", "nobody:nogroup"])
                .arg(&base));
        }
        let mut command = if as_root {
            let mut c = Command::new("setpriv");
            c.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"]);
            c.arg(Path::new(CATALINA_HOME).join("bin/catalina.sh"));
            c
        } else {
            Command::new(Path::new(CATALINA_HOME).join("bin/catalina.sh"))
        };
        command
            .arg("run")
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("LANG", "C.UTF-8")
            .env("CATALINA_HOME", CATALINA_HOME)
            .env("CATALINA_BASE", &base)
            .env("CATALINA_TMPDIR", base.join("temp"))
            .env("JAVA_OPTS", JAVA_OPTS)
            // Its own process group: drop kills catalina.sh, java and anything they started.
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("duplicate file handle"))
            .stderr(log);
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("spawn Tomcat ({HOW}): {e}"));
        let mut tomcat = Tomcat {
            child,
            root,
            port,
            pki,
        };
        if let Err(reason) = tomcat.wait_started() {
            panic!(
                "Tomcat did not start: {reason}\n--- catalina.out (tail) ---\n{}",
                tomcat.log_tail()
            );
        }
        tomcat
    }

    fn wait_started(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().map_err(|e| e.to_string())? {
                return Err(format!("Tomcat exited ({status}) before it started"));
            }
            let log = self.log();
            if log.contains(STARTED) {
                // A connector that failed (a bad truststore, the port taken meanwhile) is
                // logged, not fatal: then the port may answer, but not this Tomcat.
                if log.contains("SEVERE:") {
                    return Err("started with errors (SEVERE in its log)".to_string());
                }
                break;
            }
            if Instant::now() > deadline {
                return Err(format!("no {STARTED:?} after {START_TIMEOUT:?}"));
            }
            std::thread::sleep(POLL);
        }
        TcpStream::connect_timeout(&self.address(), Duration::from_secs(2))
            .map(drop)
            .map_err(|e| format!("started, but nothing listens on {}: {e}", self.address()))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn address(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn pki(&self) -> &Pki {
        &self.pki
    }

    /// Everything Tomcat printed so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.root.0.join("base/logs/catalina.out")).unwrap_or_default()
    }

    fn log_tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
    }

    /// One HTTPS request straight to Tomcat (not through Envoy) with `openssl s_client`,
    /// presenting `client` if given and checking Tomcat's certificate against the test CA.
    /// Returns what came back on stdout: the HTTP response, or nothing if the handshake failed.
    pub fn direct_request(&self, client: Option<&ClientCert>, path: &str) -> DirectReply {
        let mut command = Command::new("openssl");
        command
            .args(["s_client", "-quiet", "-verify_return_error", "-servername"])
            .arg(SERVER_NAME)
            .arg("-connect")
            .arg(self.address().to_string())
            .arg("-CAfile")
            .arg(self.pki.ca_pem());
        if let Some(client) = client {
            command
                .arg("-cert")
                .arg(&client.certificate)
                .arg("-key")
                .arg(&client.key);
        }
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {SERVER_NAME}\r\nx-forwarded-user: admin\r\nConnection: close\r\n\r\n"
        );
        run_with_input(&mut command, request.as_bytes(), Duration::from_secs(10))
    }

    /// Plain HTTP (no TLS at all) to Tomcat's TLS port; what came back, lossily as text.
    pub fn plain_http_request(&self, path: &str) -> String {
        let mut stream = TcpStream::connect_timeout(&self.address(), Duration::from_secs(2))
            .unwrap_or_else(|e| panic!("connect {}: {e}", self.address()));
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("read timeout");
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {SERVER_NAME}\r\nx-forwarded-user: admin\r\nConnection: close\r\n\r\n"
        );
        let _ = stream.write_all(request.as_bytes());
        let mut bytes = Vec::new();
        let _ = stream.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

impl Drop for Tomcat {
    fn drop(&mut self) {
        // The child leads its own process group (process_group(0)): its pid is the group id.
        // (The shell's own kill: no procps needed.)
        let _ = Command::new("sh")
            .args(["-c", &format!("kill -9 -{}", self.child.id())])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- Tomcat log, last {LOG_TAIL_LINES} lines ---\n{}",
                self.log_tail()
            );
        }
        // Then `root` drops: the directory goes.
    }
}

/// A directory that is emptied when made and removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(path: PathBuf) -> TempDir {
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// What `openssl s_client` gave back.
#[derive(Debug, Clone)]
pub struct DirectReply {
    /// The server's bytes (HTTP response), as text.
    pub stdout: String,
    /// s_client's own messages (verification, alerts).
    pub stderr: String,
    pub exit_code: Option<i32>,
}

impl DirectReply {
    /// The HTTP status line, if any response came back.
    pub fn status_line(&self) -> Option<&str> {
        self.stdout.lines().find(|line| line.starts_with("HTTP/"))
    }
}

/// Panics, saying how to install them, unless Tomcat, javac, keytool and openssl are here.
fn check_installed() {
    for file in [
        &format!("{CATALINA_HOME}/bin/catalina.sh"),
        &format!("{CATALINA_HOME}/bin/bootstrap.jar"),
        SERVLET_API_JAR,
    ] {
        assert!(
            Path::new(file).is_file(),
            "Tomcat not installed: no {file}; {HOW}"
        );
    }
    for tool in ["javac", "keytool", "openssl"] {
        let found = Command::new(tool)
            .arg(if tool == "openssl" {
                "version"
            } else {
                "-help"
            })
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok();
        assert!(found, "{tool} not found; {HOW}");
    }
}

/// conf/server.xml, conf/tls/, and webapps/ROOT with the compiled servlet.
fn build_base(base: &Path, pki: &Pki, port: u16, client_auth: ClientAuth) {
    let sources = repo_root().join("tests/tomcat");
    let classes = base.join("webapps/ROOT/WEB-INF/classes");
    let meta_inf = base.join("webapps/ROOT/META-INF");
    let tls = base.join("conf/tls");
    for dir in [
        &classes,
        &meta_inf,
        &tls,
        &base.join("logs"),
        &base.join("temp"),
        &base.join("work"),
    ] {
        fs::create_dir_all(dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    }
    let template = read(&sources.join("server.xml"));
    let verification = match client_auth {
        ClientAuth::Required => "required",
        ClientAuth::Optional => "optional",
    };
    let server_xml = template
        .replace("@PORT@", &port.to_string())
        .replace("@TRUSTSTORE_PASSWORD@", TRUSTSTORE_PASSWORD)
        .replace(
            "certificateVerification=\"required\"",
            &format!("certificateVerification=\"{verification}\""),
        );
    assert!(
        !server_xml.contains('@'),
        "tests/tomcat/server.xml has a placeholder tomcat.rs does not fill"
    );
    write(&base.join("conf/server.xml"), &server_xml);
    write(
        &base.join("webapps/ROOT/WEB-INF/web.xml"),
        &read(&sources.join("web.xml")),
    );
    write(
        &meta_inf.join("context.xml"),
        &read(&sources.join("context.xml")),
    );
    for name in ["server.pem", "server.key", "trust.p12"] {
        fs::copy(pki.dir.join(name), tls.join(name))
            .unwrap_or_else(|e| panic!("copy {name} into {}: {e}", tls.display()));
    }
    let echo_class = compiled_servlet().join("Echo.class");
    fs::copy(&echo_class, classes.join("Echo.class"))
        .unwrap_or_else(|e| panic!("copy {}: {e}", echo_class.display()));
}

/// This test process's directory for what its Tomcats share, `target/tomcat-tests/<pid>`; the
/// first call removes those of earlier processes. Making certificates and compiling take
/// seconds on a busy machine (each starts a JVM or generates keys), so they are done once.
fn process_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let parent = repo_root().join("target/tomcat-tests");
        let _ = fs::remove_dir_all(&parent);
        let dir = parent.join(std::process::id().to_string());
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        dir
    })
}

/// The certificates every Tomcat of this process uses (a fresh set per process).
fn shared_pki() -> Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| Pki::create(&process_dir().join("pki")))
        .clone()
}

/// The directory of `Echo.class`, compiled once per process.
fn compiled_servlet() -> PathBuf {
    static CLASSES: OnceLock<PathBuf> = OnceLock::new();
    CLASSES
        .get_or_init(|| {
            let classes = process_dir().join("classes");
            fs::create_dir_all(&classes)
                .unwrap_or_else(|e| panic!("create {}: {e}", classes.display()));
            run(Command::new("javac")
                .args(["-encoding", "UTF-8", "-cp", SERVLET_API_JAR, "-d"])
                .arg(&classes)
                .arg(repo_root().join("tests/tomcat/Echo.java")));
            classes
        })
        .clone()
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn write(path: &Path, text: &str) {
    fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// Runs `command` to the end; panics with its output if it fails.
fn run(command: &mut Command) {
    let output = command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {:?} ({HOW}): {e}", command.get_program()));
    assert!(
        output.status.success(),
        "{command:?} failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Runs `command` with `input` on stdin, for at most `limit` (then kills it).
fn run_with_input(command: &mut Command, input: &[u8], limit: Duration) -> DirectReply {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run {:?}: {e}", command.get_program()));
    if let Some(mut stdin) = child.stdin.take() {
        // A refused handshake may close the pipe first; what matters is what comes back.
        let _ = stdin.write_all(input);
    }
    let read_all = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            String::from_utf8_lossy(&bytes).into_owned()
        })
    };
    let stdout = read_all(Box::new(child.stdout.take().expect("piped stdout")));
    let stderr = read_all(Box::new(child.stderr.take().expect("piped stderr")));
    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(POLL),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    DirectReply {
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
        exit_code: status.and_then(|s| s.code()),
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .unwrap_or_else(|e| panic!("find a free port: {e}"))
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Distinct within this process and across quick successive runs.
fn unique_number() -> u64 {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    (u64::from(nanos) << 16) | (NEXT.fetch_add(1, Ordering::SeqCst) as u64 & 0xffff)
}
