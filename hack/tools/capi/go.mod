module fleet.mlops.dev/hack/tools/capi

go 1.26.0

// Only pins the Cluster API version whose CRDs the local fleet installs;
// nothing here is built.
require sigs.k8s.io/cluster-api v1.14.2
