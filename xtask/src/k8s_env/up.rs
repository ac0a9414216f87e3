//! `k8s-env up`: imports the pause image, writes the cluster's keys, token and configs, starts
//! etcd, the control plane and the kubelet, and returns once the node is Ready and untainted.
//! Builds what is missing first. Whatever already runs is kept, so a second `up` is a fast no-op.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::Cache;
use super::cluster::{
    APISERVER_PORT, CONTROLLER_MANAGER_PORT, ETCD_CLIENT_PORT, ETCD_PEER_PORT,
    KUBELET_HEALTHZ_PORT, KUBELET_PORT, Layout, NODE_NAME, SCHEDULER_PORT,
};
use super::host::HostState;
use super::process::Daemon;

/// The pod sandbox image, under a name only this project uses.
pub(crate) const PAUSE_IMAGE: &str = "berth-k8s/pause:3.4.1";
const KUBELET_CONFIG_TEMPLATE: &str = include_str!("../../k8s/kubelet-config.yaml");
/// Unix socket paths are limited to 108 bytes; the dockershim socket lives in DIR.
const MAX_SOCKET_PATH: usize = 107;
const APISERVER_TIMEOUT: Duration = Duration::from_secs(120);
const NODE_READY_TIMEOUT: Duration = Duration::from_secs(180);

pub(crate) fn up(cache: &Cache, dir: &Path) -> Result<(), String> {
    let started = Instant::now();
    let layout = Layout::new(dir);
    let daemons = layout.daemons(cache);
    if daemons.iter().all(|d| d.running_pid().is_some()) && layout.node_ready() {
        print_access(&layout);
        return Ok(());
    }
    super::build::ensure(cache)?;
    check_docker()?;
    check_socket_path_length(&layout)?;
    prepare_dir(&layout)?;
    import_pause_image(cache)?;
    write_service_account_key(&layout)?;
    write_token_once(&layout)?;
    write_kubeconfig(&layout)?;
    write_kubelet_config(&layout)?;

    let [etcd, apiserver, controller_manager, scheduler, kubelet] = &daemons[..] else {
        unreachable!("Layout::daemons lists five daemons");
    };
    etcd.start(&etcd_args(&layout))?;
    apiserver.start(&apiserver_args(&layout))?;
    wait_for(
        "the API server to be ready",
        APISERVER_TIMEOUT,
        &[etcd, apiserver],
        || layout.apiserver_ready(),
    )?;
    controller_manager.start(&controller_manager_args(&layout))?;
    scheduler.start(&scheduler_args(&layout))?;
    HostState::new(dir).record_once()?;
    kubelet.start(&kubelet_args(&layout))?;
    wait_for(
        &format!("node {NODE_NAME} to be Ready and untainted"),
        NODE_READY_TIMEOUT,
        &daemons.iter().collect::<Vec<_>>(),
        || layout.node_ready(),
    )?;
    eprintln!(
        "xtask: node {NODE_NAME} Ready in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    print_access(&layout);
    Ok(())
}

fn print_access(layout: &Layout) {
    println!("KUBECONFIG={}", layout.kubeconfig().display());
    println!("server: https://127.0.0.1:{APISERVER_PORT}");
    println!("ca: {}", layout.ca().display());
    println!(
        "token: in {} (user admin, group system:masters)",
        layout.kubeconfig().display()
    );
}

fn check_docker() -> Result<(), String> {
    let reachable = Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|e| format!("running docker: {e} (is the Docker CLI installed?)"))?;
    if reachable.success() {
        Ok(())
    } else {
        Err("the Docker daemon is not reachable; the kubelet runs pods on it".to_owned())
    }
}

fn check_socket_path_length(layout: &Layout) -> Result<(), String> {
    let socket = dockershim_socket(layout);
    if socket.len() > MAX_SOCKET_PATH {
        return Err(format!(
            "{socket} is longer than {MAX_SOCKET_PATH} bytes (a Unix socket path limit); use a shorter --dir"
        ));
    }
    Ok(())
}

fn dockershim_socket(layout: &Layout) -> String {
    layout.dir.join("dockershim.sock").display().to_string()
}

fn prepare_dir(layout: &Layout) -> Result<(), String> {
    for sub in [
        "",
        "kubelet",
        "dockershim",
        "volume-plugins",
        "kcm-volume-plugins",
    ] {
        let path = layout.dir.join(sub);
        fs::create_dir_all(&path).map_err(|e| format!("creating {}: {e}", path.display()))?;
    }
    // The directory holds the admin token and the service-account signing key.
    fs::set_permissions(&layout.dir, fs::Permissions::from_mode(0o700))
        .map_err(|e| format!("restricting {}: {e}", layout.dir.display()))
}

/// Whether the engine has the pause image.
pub(super) fn pause_image_present() -> bool {
    Command::new("docker")
        .args(["image", "inspect", PAUSE_IMAGE])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Imports the `pause` binary as an image whose only file it is (nothing can be pulled here).
fn import_pause_image(cache: &Cache) -> Result<(), String> {
    if pause_image_present() {
        return Ok(());
    }
    let rootfs = std::env::temp_dir().join(format!("berth-k8s-pause-{}", std::process::id()));
    let result = (|| {
        fs::create_dir_all(&rootfs).map_err(|e| format!("creating {}: {e}", rootfs.display()))?;
        let pause = rootfs.join("pause");
        fs::copy(cache.bin("pause"), &pause)
            .map_err(|e| format!("copying pause to {}: {e}", pause.display()))?;
        fs::set_permissions(&pause, fs::Permissions::from_mode(0o755))
            .map_err(|e| format!("chmod {}: {e}", pause.display()))?;
        let command = format!(
            "tar --numeric-owner --owner=0 --group=0 -C '{}' -c pause | docker import --change 'ENTRYPOINT [\"/pause\"]' - {PAUSE_IMAGE}",
            rootfs.display()
        );
        let status = Command::new("sh")
            .args(["-c", &command])
            .stdout(Stdio::null())
            .status()
            .map_err(|e| format!("importing {PAUSE_IMAGE}: {e}"))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("importing {PAUSE_IMAGE} failed ({status})"))
        }
    })();
    let _ = fs::remove_dir_all(&rootfs);
    result
}

fn write_service_account_key(layout: &Layout) -> Result<(), String> {
    let key = layout.dir.join("sa.key");
    let public = layout.dir.join("sa.pub");
    if key.is_file() && public.is_file() {
        return Ok(());
    }
    let openssl = |args: &[&str]| -> Result<(), String> {
        let output = Command::new("openssl")
            .args(args)
            .current_dir(&layout.dir)
            .output()
            .map_err(|e| format!("running openssl {}: {e}", args.join(" ")))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(format!(
                "openssl {} in {} failed: {}",
                args.join(" "),
                layout.dir.display(),
                String::from_utf8_lossy(&output.stderr)
            ))
        }
    };
    openssl(&["genrsa", "-out", "sa.key", "2048"])?;
    openssl(&["rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub"])
}

/// A random admin token, made once per cluster directory.
fn write_token_once(layout: &Layout) -> Result<(), String> {
    if layout.token().is_ok() {
        return Ok(());
    }
    let mut bytes = [0u8; 16];
    use std::io::Read;
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| format!("reading /dev/urandom: {e}"))?;
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    write_private(
        &layout.token_file(),
        &format!("{token},admin,admin-uid,system:masters\n"),
    )
}

fn write_kubeconfig(layout: &Layout) -> Result<(), String> {
    let token = layout.token()?;
    let kubeconfig = format!(
        "apiVersion: v1
kind: Config
clusters:
- name: berth-k8s
  cluster:
    server: https://127.0.0.1:{APISERVER_PORT}
    certificate-authority: {ca}
users:
- name: admin
  user:
    token: {token}
contexts:
- name: berth-k8s
  context: {{cluster: berth-k8s, user: admin, namespace: default}}
current-context: berth-k8s
",
        ca = layout.ca().display()
    );
    write_private(&layout.kubeconfig(), &kubeconfig)
}

fn write_kubelet_config(layout: &Layout) -> Result<(), String> {
    let config = KUBELET_CONFIG_TEMPLATE
        .replace("@PORT@", &KUBELET_PORT.to_string())
        .replace("@HEALTHZ_PORT@", &KUBELET_HEALTHZ_PORT.to_string());
    let path = layout.dir.join("kubelet-config.yaml");
    fs::write(&path, config).map_err(|e| format!("writing {}: {e}", path.display()))
}

fn write_private(path: &Path, contents: &str) -> Result<(), String> {
    fs::write(path, contents).map_err(|e| format!("writing {}: {e}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("chmod {}: {e}", path.display()))
}

fn etcd_args(layout: &Layout) -> Vec<String> {
    let client = format!("http://127.0.0.1:{ETCD_CLIENT_PORT}");
    let peer = format!("http://127.0.0.1:{ETCD_PEER_PORT}");
    vec![
        "--name=berth".to_owned(),
        format!("--data-dir={}", layout.dir.join("etcd-data").display()),
        format!("--listen-client-urls={client}"),
        format!("--advertise-client-urls={client}"),
        format!("--listen-peer-urls={peer}"),
        format!("--initial-advertise-peer-urls={peer}"),
        format!("--initial-cluster=berth={peer}"),
        // Test data only: durability across a host crash is not worth the fsync latency.
        "--unsafe-no-fsync".to_owned(),
    ]
}

fn apiserver_args(layout: &Layout) -> Vec<String> {
    let dir = layout.dir.display();
    vec![
        format!("--etcd-servers=http://127.0.0.1:{ETCD_CLIENT_PORT}"),
        "--bind-address=127.0.0.1".to_owned(),
        "--advertise-address=127.0.0.1".to_owned(),
        format!("--secure-port={APISERVER_PORT}"),
        "--insecure-port=0".to_owned(),
        // The API server writes its self-signed certificate here (layout.ca()).
        format!("--cert-dir={dir}/certs"),
        format!("--token-auth-file={}", layout.token_file().display()),
        "--authorization-mode=RBAC".to_owned(),
        "--service-account-issuer=https://kubernetes.default.svc".to_owned(),
        format!("--service-account-key-file={dir}/sa.pub"),
        format!("--service-account-signing-key-file={dir}/sa.key"),
        "--service-cluster-ip-range=10.0.0.0/24".to_owned(),
        "--allow-privileged=true".to_owned(),
        // Pods get no token volume and need no `default` ServiceAccount.
        "--disable-admission-plugins=ServiceAccount".to_owned(),
        // The node has no address the kubelet accepts but its name (loopback is refused as a
        // node IP): logs and exec reach the kubelet through `localhost`.
        "--kubelet-preferred-address-types=Hostname,InternalIP".to_owned(),
    ]
}

fn controller_manager_args(layout: &Layout) -> Vec<String> {
    let dir = layout.dir.display();
    vec![
        format!("--kubeconfig={}", layout.kubeconfig().display()),
        "--bind-address=127.0.0.1".to_owned(),
        "--port=0".to_owned(),
        format!("--secure-port={CONTROLLER_MANAGER_PORT}"),
        "--leader-elect=false".to_owned(),
        format!("--service-account-private-key-file={dir}/sa.key"),
        format!("--root-ca-file={}", layout.ca().display()),
        "--use-service-account-credentials=false".to_owned(),
        // nodelifecycle must run: only it removes the not-ready taint a new Node gets.
        "--controllers=*,-csrsigning".to_owned(),
        // Otherwise it creates /usr/libexec/kubernetes/kubelet-plugins/volume/exec.
        format!("--flex-volume-plugin-dir={dir}/kcm-volume-plugins"),
    ]
}

fn scheduler_args(layout: &Layout) -> Vec<String> {
    vec![
        format!("--kubeconfig={}", layout.kubeconfig().display()),
        "--bind-address=127.0.0.1".to_owned(),
        "--port=0".to_owned(),
        format!("--secure-port={SCHEDULER_PORT}"),
        "--leader-elect=false".to_owned(),
    ]
}

fn kubelet_args(layout: &Layout) -> Vec<String> {
    let dir = layout.dir.display();
    let socket = format!("unix://{}", dockershim_socket(layout));
    vec![
        format!("--config={dir}/kubelet-config.yaml"),
        format!("--kubeconfig={}", layout.kubeconfig().display()),
        "--container-runtime=docker".to_owned(),
        "--docker-endpoint=unix:///var/run/docker.sock".to_owned(),
        format!("--container-runtime-endpoint={socket}"),
        format!("--image-service-endpoint={socket}"),
        format!(
            "--experimental-dockershim-root-directory={}",
            layout.dockershim_root().display()
        ),
        format!("--pod-infra-container-image={PAUSE_IMAGE}"),
        format!("--root-dir={}", layout.kubelet_root().display()),
        format!("--cert-dir={}/pki", layout.kubelet_root().display()),
        format!("--volume-plugin-dir={dir}/volume-plugins"),
        format!("--hostname-override={NODE_NAME}"),
        "--v=1".to_owned(),
    ]
}

/// Polls `ready` until it holds; fails at the deadline or as soon as one of `daemons` exits.
fn wait_for(
    what: &str,
    timeout: Duration,
    daemons: &[&Daemon],
    mut ready: impl FnMut() -> bool,
) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    loop {
        if ready() {
            return Ok(());
        }
        for daemon in daemons {
            daemon
                .check_running()
                .map_err(|e| format!("waiting for {what}: {e}"))?;
        }
        if Instant::now() > deadline {
            return Err(format!(
                "waiting for {what}: not within {} s; the logs are in {}",
                timeout.as_secs(),
                daemons
                    .first()
                    .map(|d| d
                        .log_file()
                        .parent()
                        .unwrap_or(Path::new(""))
                        .display()
                        .to_string())
                    .unwrap_or_default()
            ));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}
