// Package deploy holds the checks of pgcaravan's deployment files: the
// container image's Dockerfile (docker/), the Helm chart (helm/pgcaravan) and
// the Kubernetes runbook (README.md). It is a module of its own so that the
// Kubernetes API types, buildkit's Dockerfile parser and grpcurl stay out of
// the main module.
//
// The tests:
//
//   - render the chart with every values file in helm/pgcaravan/ci and decode
//     each object strictly into the Kubernetes API types (unknown fields
//     rejected), then check what the types cannot: selectors, ports, probes,
//     Secret and volume references, the security context, and that every
//     flag and PGCARAVAN_* variable given to pgcaravan exists in the binary;
//   - parse and lint the Dockerfile, and build the binary as its build stage
//     does to check it is static;
//   - start real coordinators on throwaway PostgreSQL clusters and run every
//     grpcurl command of the runbook and of the chart's NOTES.txt through
//     grpcurl's Go library; the Cutover and Cleanup commands run against live
//     migrations (a coordinator with --follow, a worker and a real cdcnode,
//     or an embedded `clone --follow`) whose source changes after the copy.
//
// It has no code of its own beyond this file: nothing imports it.
package deploy
