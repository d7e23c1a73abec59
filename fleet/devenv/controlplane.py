"""One Kubernetes control plane of the local fleet: its files and its commands.

Each plane has its own CA; the API server serves TLS on 127.0.0.1 and
authenticates clients by certificate. The controller manager and scheduler
run as `system:kube-controller-manager` / `system:kube-scheduler`, so the
bootstrap RBAC roles (not `system:masters`) bound what they may do, as in a
kubeadm cluster. Only the admin and kwok identities are cluster admins.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fleet.devenv import manifests
from fleet.devenv.kubeapi import Credentials
from fleet.devenv.pki import KeyPair, new_ca, new_signing_key

SERVICE_CIDR = "10.96.0.0/16"
POD_CIDR = "10.244.0.0/16"
HOSTS = ("127.0.0.1", "localhost")
ADMIN_USER = "kubernetes-admin"

# Go's default GOGC=100 lets the heap grow to twice the live data; at 50 an idle
# API server holds ~45 MiB less, for a little more GC work. Measured in README.
KUBE_ENV = {"GOGC": "50"}

# (file stem, certificate common name, organizations)
_CLIENTS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("admin", ADMIN_USER, ("system:masters",)),
    ("controller-manager", "system:kube-controller-manager", ()),
    ("scheduler", "system:kube-scheduler", ()),
    ("kwok", "kwok-controller", ("system:masters",)),
)


@dataclass(frozen=True, slots=True)
class PlaneFiles:
    """Where one plane's certificates, keys and kubeconfigs are."""

    name: str
    root: Path
    port: int

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def pki(self) -> Path:
        return self.root / "pki"

    @property
    def ca_cert(self) -> Path:
        return self.pki / "ca.crt"

    def cert(self, stem: str) -> Path:
        return self.pki / f"{stem}.crt"

    def key(self, stem: str) -> Path:
        return self.pki / f"{stem}.key"

    def kubeconfig(self, stem: str = "admin") -> Path:
        return self.root / f"{stem}.kubeconfig"

    @property
    def admin_kubeconfig_text(self) -> str:
        return self.kubeconfig("admin").read_text()

    @property
    def admin_credentials(self) -> Credentials:
        return Credentials(
            server=self.server,
            ca_file=self.ca_cert,
            cert_file=self.cert("admin"),
            key_file=self.key("admin"),
        )


def recorded_plane(state_dir: Path, name: str, server: str) -> PlaneFiles:
    """The files of a plane that `up` wrote, found again from the state file's server URL."""
    return PlaneFiles(
        name=name, root=state_dir / "planes" / name, port=int(server.rsplit(":", 1)[1])
    )


def write_plane_files(name: str, root: Path, port: int) -> PlaneFiles:
    """Create the plane's CA, serving and client certificates and kubeconfigs."""
    files = PlaneFiles(name=name, root=root, port=port)
    ca = new_ca(f"{name}-ca")
    ca.as_key_pair().write(files.pki, "ca")
    ca.issue("kube-apiserver", hosts=(*HOSTS, "kubernetes.default.svc"), server=True).write(
        files.pki, "apiserver"
    )
    new_signing_key().write(files.pki, "service-account")
    for stem, common_name, organizations in _CLIENTS:
        client: KeyPair = ca.issue(common_name, organizations=organizations, client=True)
        client.write(files.pki, stem)
        path = files.kubeconfig(stem)
        path.touch(mode=0o600)
        path.write_text(manifests.kubeconfig(name, files.server, ca.cert_pem, common_name, client))
    return files


def etcd_command(binary: Path, data_dir: Path, client_port: int, peer_port: int) -> list[str]:
    client, peer = f"http://127.0.0.1:{client_port}", f"http://127.0.0.1:{peer_port}"
    return [
        str(binary),
        "--name=fleet-dev",
        f"--data-dir={data_dir}",
        f"--listen-client-urls={client}",
        f"--advertise-client-urls={client}",
        f"--listen-peer-urls={peer}",
        f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster=fleet-dev={peer}",
        # Throwaway data: skip fsync, which dominates etcd latency on a shared disk.
        "--unsafe-no-fsync=true",
        "--log-level=warn",
        "--quota-backend-bytes=4294967296",
    ]


def apiserver_command(binary: Path, files: PlaneFiles, etcd_url: str) -> list[str]:
    pki = files.pki
    return [
        str(binary),
        f"--etcd-servers={etcd_url}",
        # All planes share one etcd; each keeps its keys under its own prefix.
        f"--etcd-prefix=/fleet-dev/{files.name}",
        "--bind-address=127.0.0.1",
        "--advertise-address=127.0.0.1",
        f"--secure-port={files.port}",
        f"--cert-dir={pki}",
        f"--tls-cert-file={files.cert('apiserver')}",
        f"--tls-private-key-file={files.key('apiserver')}",
        f"--client-ca-file={files.ca_cert}",
        "--authorization-mode=Node,RBAC",
        "--anonymous-auth=false",
        "--allow-privileged=true",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
        f"--service-account-key-file={pki / 'service-account.crt'}",
        f"--service-account-signing-key-file={pki / 'service-account.key'}",
        "--profiling=false",
        "--v=0",
    ]


def controller_manager_command(binary: Path, files: PlaneFiles) -> list[str]:
    return [
        str(binary),
        f"--kubeconfig={files.kubeconfig('controller-manager')}",
        # Nothing scrapes it locally: serve no port at all.
        "--secure-port=0",
        f"--cluster-name={files.name}",
        "--use-service-account-credentials=true",
        f"--service-account-private-key-file={files.key('service-account')}",
        f"--root-ca-file={files.ca_cert}",
        "--leader-elect=true",
        "--profiling=false",
        "--v=0",
    ]


def scheduler_command(binary: Path, files: PlaneFiles) -> list[str]:
    return [
        str(binary),
        f"--kubeconfig={files.kubeconfig('scheduler')}",
        "--secure-port=0",
        "--leader-elect=true",
        "--profiling=false",
        "--v=0",
    ]


def kwok_command(binary: Path, files: PlaneFiles, stages: Path) -> list[str]:
    return [
        str(binary),
        f"--kubeconfig={files.kubeconfig('kwok')}",
        f"--config={stages}",
        "--manage-all-nodes=false",
        f"--manage-nodes-with-annotation-selector={manifests.KWOK_NODE_ANNOTATION}=fake",
        "--node-lease-duration-seconds=40",
        f"--cidr={POD_CIDR}",
        "--node-ip=127.0.0.1",
    ]
