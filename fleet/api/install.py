"""What `fleet install` puts on a management cluster: CRDs, RBAC, the controller.

RBAC is the least the controller needs: it reads CAPI Clusters (and patches
them only to add or remove its finalizer), reads kubeconfig Secrets, Addons
and Datacenters, and owns AddonProfiles' status, their revisions
(ControllerRevisions) and AddonDeployments.
"""

from __future__ import annotations

from typing import Any

from fleet import __version__
from fleet.api import CAPI_GROUP, GROUP
from fleet.api.crds import crds

JSON = dict[str, Any]
NAME = "fleet-controller"
DEFAULT_NAMESPACE = "fleet-system"
DEFAULT_IMAGE = f"ghcr.io/fleet-mlops/fleet:{__version__}"

READ = ["get", "list", "watch"]
RULES: list[JSON] = [
    {"apiGroups": [CAPI_GROUP], "resources": ["clusters"], "verbs": [*READ, "patch"]},
    {"apiGroups": [""], "resources": ["secrets"], "verbs": READ},
    {"apiGroups": [GROUP], "resources": ["addons", "datacenters"], "verbs": READ},
    {"apiGroups": [GROUP], "resources": ["addonprofiles"], "verbs": [*READ, "patch"]},
    {
        "apiGroups": [GROUP],
        "resources": ["addondeployments"],
        "verbs": [*READ, "create", "patch", "delete"],
    },
    # patch: the model-cache finalizer.
    {"apiGroups": [GROUP], "resources": ["modelartifacts"], "verbs": [*READ, "patch"]},
    {
        "apiGroups": [GROUP],
        "resources": [
            "addonprofiles/status",
            "addondeployments/status",
            "modelartifacts/status",
        ],
        "verbs": ["get", "patch"],
    },
    {"apiGroups": ["", "events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]},
    # Profiles' revisions (labelled fleet.mlops.dev/profile); a kopf index watches them.
    {
        "apiGroups": ["apps"],
        "resources": ["controllerrevisions"],
        "verbs": [*READ, "create", "delete"],
    },
]
# In the controller's own namespace only: the leader-election Lease.
NAMESPACE_RULES: list[JSON] = [
    {
        "apiGroups": ["coordination.k8s.io"],
        "resources": ["leases"],
        "verbs": ["get", "create", "update"],
    },
]


def manifests(namespace: str = DEFAULT_NAMESPACE, image: str = DEFAULT_IMAGE) -> list[JSON]:
    labels = {"app.kubernetes.io/name": "fleet", "app.kubernetes.io/component": "controller"}
    metadata = {"name": NAME, "namespace": namespace, "labels": labels}
    return [
        *crds(),
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": metadata},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": NAME, "labels": labels},
            "rules": RULES,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": NAME, "labels": labels},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": NAME,
            },
            "subjects": [{"kind": "ServiceAccount", "name": NAME, "namespace": namespace}],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": metadata,
            "rules": NAMESPACE_RULES,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": metadata,
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": NAME},
            "subjects": [{"kind": "ServiceAccount", "name": NAME, "namespace": namespace}],
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": metadata,
            "spec": {
                "selector": labels,
                "ports": [{"name": "metrics", "port": 8080, "targetPort": "metrics"}],
            },
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": metadata,
            "spec": {
                # Two replicas: one leads (Lease), the other takes over within the lease time.
                "replicas": 2,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "serviceAccountName": NAME,
                        "securityContext": {
                            "runAsNonRoot": True,
                            "seccompProfile": {"type": "RuntimeDefault"},
                        },
                        "containers": [
                            {
                                "name": "controller",
                                "image": image,
                                "args": [
                                    "controller",
                                    "--leader-election-namespace",
                                    namespace,
                                    "--metrics-address",
                                    "0.0.0.0:8080",
                                    "--health-address",
                                    "0.0.0.0:8081",
                                ],
                                "ports": [
                                    {"name": "metrics", "containerPort": 8080},
                                    {"name": "health", "containerPort": 8081},
                                ],
                                "livenessProbe": {
                                    # /metrics answers on every replica, /healthz on the leader.
                                    "httpGet": {"path": "/metrics", "port": "metrics"},
                                    "periodSeconds": 20,
                                },
                                "resources": {
                                    "requests": {"cpu": "100m", "memory": "256Mi"},
                                    "limits": {"memory": "1Gi"},
                                },
                                "securityContext": {
                                    "allowPrivilegeEscalation": False,
                                    "readOnlyRootFilesystem": True,
                                    "capabilities": {"drop": ["ALL"]},
                                },
                                "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],  # noqa: S108 (emptyDir)
                            }
                        ],
                        "volumes": [{"name": "tmp", "emptyDir": {}}],
                    },
                },
            },
        },
    ]
