package deploy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"
)

// kinds maps every apiVersion/kind the chart may render to its Go type. A
// kind missing here fails the test: add it with its type, never skip it.
var kinds = map[string]func() any{
	"v1/ConfigMap":                            func() any { return &corev1.ConfigMap{} },
	"v1/PersistentVolumeClaim":                func() any { return &corev1.PersistentVolumeClaim{} },
	"v1/Secret":                               func() any { return &corev1.Secret{} },
	"v1/Service":                              func() any { return &corev1.Service{} },
	"v1/ServiceAccount":                       func() any { return &corev1.ServiceAccount{} },
	"apps/v1/Deployment":                      func() any { return &appsv1.Deployment{} },
	"apps/v1/StatefulSet":                     func() any { return &appsv1.StatefulSet{} },
	"autoscaling/v2/HorizontalPodAutoscaler":  func() any { return &autoscalingv2.HorizontalPodAutoscaler{} },
	"batch/v1/Job":                            func() any { return &batchv1.Job{} },
	"policy/v1/PodDisruptionBudget":           func() any { return &policyv1.PodDisruptionBudget{} },
	"monitoring.coreos.com/v1/ServiceMonitor": func() any { return &monitoringv1.ServiceMonitor{} },
}

// manifests is one rendering of the chart, decoded.
type manifests struct {
	objects []any
	byKind  map[string][]any
}

func (m *manifests) all(kind string) []any { return m.byKind[kind] }

// decodeStrict splits helm's output into documents and decodes each into its
// Kubernetes type, rejecting unknown and duplicate fields.
func decodeStrict(t *testing.T, rendered string) *manifests {
	t.Helper()
	m := &manifests{byKind: map[string][]any{}}
	for i, doc := range splitDocuments(rendered) {
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal([]byte(doc), &tm); err != nil {
			t.Fatalf("document %d is not YAML: %v\n%s", i, err, doc)
		}
		key := tm.APIVersion + "/" + tm.Kind
		newObj, ok := kinds[key]
		if !ok {
			t.Fatalf("document %d: %s is not a kind this test knows; add its Go type to kinds\n%s", i, key, doc)
		}
		obj := newObj()
		if err := yaml.UnmarshalStrict([]byte(doc), obj); err != nil {
			t.Fatalf("document %d (%s): strict decode: %v\n%s", i, key, err, doc)
		}
		m.objects = append(m.objects, obj)
		m.byKind[tm.Kind] = append(m.byKind[tm.Kind], obj)
	}
	if len(m.objects) == 0 {
		t.Fatal("the chart rendered no object")
	}
	return m
}

// splitDocuments splits a YAML stream on document markers, dropping
// documents that hold only comments.
func splitDocuments(s string) []string {
	var docs []string
	var cur strings.Builder
	flush := func() {
		if hasContent(cur.String()) {
			docs = append(docs, cur.String())
		}
		cur.Reset()
	}
	sc := bufio.NewScanner(strings.NewReader(s))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if strings.TrimRight(sc.Text(), " ") == "---" {
			flush()
			continue
		}
		cur.WriteString(sc.Text())
		cur.WriteByte('\n')
	}
	flush()
	return docs
}

func hasContent(doc string) bool {
	for line := range strings.Lines(doc) {
		l := strings.TrimSpace(line)
		if l != "" && !strings.HasPrefix(l, "#") {
			return true
		}
	}
	return false
}

// valuesFiles are the chart's CI values files: one rendering each.
func valuesFiles(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(chartDir, "ci", "*-values.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no values files in %s/ci: %v", chartDir, err)
	}
	return files
}

// TestChartRendersStrictly renders the chart with every CI values file and
// checks every object.
func TestChartRendersStrictly(t *testing.T) {
	flags := cliFlags(t)
	for _, file := range valuesFiles(t) {
		name := strings.TrimSuffix(filepath.Base(file), "-values.yaml")
		t.Run(name, func(t *testing.T) {
			out, err := helmTemplate(t, "-f", file)
			if err != nil {
				t.Fatal(err)
			}
			m := decodeStrict(t, out)
			values := readValues(t, file)
			checkWorkloads(t, m, flags)
			checkServices(t, m)
			checkReferences(t, m, values)
			checkModes(t, m, values)
		})
	}
}

// readValues decodes one values file as written, not merged with the
// chart's defaults: the test reads from it only what the file itself sets
// (mode, and the Secrets and ConfigMaps it says exist).
func readValues(t *testing.T, file string) map[string]any {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var v map[string]any
	if err := yaml.Unmarshal(data, &v); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	return v
}

// lookup walks a path of keys in decoded YAML; "" when absent.
func lookup(v map[string]any, path ...string) any {
	var cur any = v
	for _, k := range path {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = m[k]
	}
	return cur
}

func lookupString(v map[string]any, path ...string) string {
	s, _ := lookup(v, path...).(string)
	return s
}

// podTemplates returns every pod template the rendering holds, by workload.
func podTemplates(m *manifests) map[string]*corev1.PodTemplateSpec {
	pods := map[string]*corev1.PodTemplateSpec{}
	for _, o := range m.all("StatefulSet") {
		s := o.(*appsv1.StatefulSet)
		pods["StatefulSet/"+s.Name] = &s.Spec.Template
	}
	for _, o := range m.all("Deployment") {
		d := o.(*appsv1.Deployment)
		pods["Deployment/"+d.Name] = &d.Spec.Template
	}
	for _, o := range m.all("Job") {
		j := o.(*batchv1.Job)
		pods["Job/"+j.Name] = &j.Spec.Template
	}
	return pods
}

// checkWorkloads checks every pod: security context, resources, volumes,
// probes, and the pgcaravan command line.
func checkWorkloads(t *testing.T, m *manifests, flags map[string]cliCommand) {
	t.Helper()
	claimTemplates := map[string]bool{}
	for _, o := range m.all("StatefulSet") {
		s := o.(*appsv1.StatefulSet)
		if s.Spec.Replicas == nil || *s.Spec.Replicas != 1 {
			t.Errorf("StatefulSet %s: the coordinator and the cdcnode must have exactly 1 replica", s.Name)
		}
		for _, c := range s.Spec.VolumeClaimTemplates {
			claimTemplates[c.Name] = true
		}
		checkSelector(t, "StatefulSet/"+s.Name, s.Spec.Selector, s.Spec.Template.Labels)
	}
	for _, o := range m.all("Deployment") {
		d := o.(*appsv1.Deployment)
		checkSelector(t, "Deployment/"+d.Name, d.Spec.Selector, d.Spec.Template.Labels)
	}
	pods := podTemplates(m)
	if len(pods) == 0 {
		t.Fatal("no workload rendered")
	}
	for name, pod := range pods {
		spec := &pod.Spec
		psc := spec.SecurityContext
		if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.RunAsUser == nil || *psc.RunAsUser == 0 {
			t.Errorf("%s: the pod must run as a non-root uid (runAsNonRoot, runAsUser)", name)
		}
		if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
			t.Errorf("%s: pgcaravan needs no Kubernetes API token; set automountServiceAccountToken: false", name)
		}
		volumes := map[string]bool{}
		for _, v := range spec.Volumes {
			volumes[v.Name] = true
		}
		for _, c := range spec.Containers {
			where := name + " container " + c.Name
			sc := c.SecurityContext
			if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
				t.Errorf("%s: readOnlyRootFilesystem must be true (pgcaravan writes only to its data volume)", where)
			}
			if sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
				t.Errorf("%s: allowPrivilegeEscalation must be false", where)
			}
			if sc == nil || sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
				t.Errorf("%s: capabilities must drop ALL", where)
			}
			if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() {
				t.Errorf("%s: needs cpu and memory requests and a memory limit", where)
			}
			if strings.HasSuffix(c.Image, ":latest") || !strings.Contains(c.Image, ":") {
				t.Errorf("%s: image %q needs a tag other than latest", where, c.Image)
			}
			dataMounted := false
			for _, vm := range c.VolumeMounts {
				if !volumes[vm.Name] && !claimTemplates[vm.Name] {
					t.Errorf("%s: mounts volume %q that the pod does not define", where, vm.Name)
				}
				if vm.MountPath == "/var/lib/pgcaravan" {
					dataMounted = true
				}
			}
			if !dataMounted {
				t.Errorf("%s: /var/lib/pgcaravan (HOME, TMPDIR and --dir in the image) must be a volume: the root filesystem is read-only", where)
			}
			checkProbes(t, where, name, &c)
			checkCommandLine(t, where, &c, flags)
		}
	}
}

func checkSelector(t *testing.T, where string, sel *metav1.LabelSelector, labels map[string]string) {
	t.Helper()
	if sel == nil || len(sel.MatchLabels) == 0 {
		t.Errorf("%s: no selector", where)
		return
	}
	for k, v := range sel.MatchLabels {
		if labels[k] != v {
			t.Errorf("%s: selector %s=%s does not match the pod template's labels %v", where, k, v, labels)
		}
	}
}

// checkProbes: long-running pods (coordinator, workers, cdcnode) have
// liveness and readiness probes on ports the container declares; gRPC
// probes are used where the port speaks plaintext gRPC. A Job has none: it
// runs to its end. The cdcnode has no gRPC health service: its probes are
// HTTP GETs of /healthz and /readyz on the port of its --metrics-listen.
func checkProbes(t *testing.T, where, workload string, c *corev1.Container) {
	t.Helper()
	if strings.HasPrefix(workload, "Job/") {
		return
	}
	ports := map[int32]string{}
	names := map[string]bool{}
	for _, p := range c.Ports {
		ports[p.ContainerPort] = p.Name
		names[p.Name] = true
	}
	if len(c.Args) > 0 && c.Args[0] == "cdcnode" {
		checkCDCNodeProbes(t, where, c, ports, names)
		return
	}
	grpcProbes := 0
	for kind, p := range map[string]*corev1.Probe{"liveness": c.LivenessProbe, "readiness": c.ReadinessProbe} {
		if p == nil {
			t.Errorf("%s: no %s probe", where, kind)
			continue
		}
		switch {
		case p.GRPC != nil:
			grpcProbes++
			if _, ok := ports[p.GRPC.Port]; !ok {
				t.Errorf("%s: %s gRPC probe on port %d, which the container does not declare", where, kind, p.GRPC.Port)
			}
		case p.TCPSocket != nil:
			if !portDeclared(p.TCPSocket.Port, ports, names) {
				t.Errorf("%s: %s TCP probe on port %s, which the container does not declare", where, kind, p.TCPSocket.Port.String())
			}
		default:
			t.Errorf("%s: %s probe must be gRPC (the health service) or TCP", where, kind)
		}
	}
	tlsOn := slices.ContainsFunc(c.Args, func(a string) bool { return strings.HasPrefix(a, "--tls-cert=") })
	isCoordinator := len(c.Args) > 0 && c.Args[0] == "coordinator"
	if !tlsOn && isCoordinator && grpcProbes != 2 {
		t.Errorf("%s: a plaintext coordinator is probed on its gRPC health service", where)
	}
	if !isCoordinator && grpcProbes == 0 {
		t.Errorf("%s: the worker's readiness is its gRPC health service (--health-listen)", where)
	}
}

// checkCDCNodeProbes: the cdcnode serves /metrics, /healthz and /readyz on
// its --metrics-listen port, which the container declares as "metrics";
// liveness reads /healthz and readiness /readyz there. A probe on a port
// the node does not listen on would restart it forever.
func checkCDCNodeProbes(t *testing.T, where string, c *corev1.Container, ports map[int32]string, names map[string]bool) {
	t.Helper()
	var listen string
	for _, a := range c.Args {
		if v, ok := strings.CutPrefix(a, "--metrics-listen="); ok {
			listen = v
		}
	}
	_, portText, _ := strings.Cut(listen, ":")
	port, err := strconv.Atoi(portText)
	if listen == "" || err != nil || ports[int32(port)] != "metrics" {
		t.Errorf("%s: the cdcnode needs --metrics-listen=:PORT with PORT declared as the container port \"metrics\"; args %v, ports %v", where, c.Args, ports)
		return
	}
	if c.StartupProbe != nil {
		t.Errorf("%s: the cdcnode answers /healthz from its start; it needs no startup probe", where)
	}
	for kind, want := range map[string]struct {
		probe *corev1.Probe
		path  string
	}{"liveness": {c.LivenessProbe, "/healthz"}, "readiness": {c.ReadinessProbe, "/readyz"}} {
		p := want.probe
		switch {
		case p == nil:
			t.Errorf("%s: no %s probe", where, kind)
		case p.HTTPGet == nil:
			t.Errorf("%s: the cdcnode's %s probe must be an HTTP GET of %s", where, kind, want.path)
		case p.HTTPGet.Path != want.path:
			t.Errorf("%s: %s probe reads %s, want %s", where, kind, p.HTTPGet.Path, want.path)
		case !portDeclared(p.HTTPGet.Port, ports, names) ||
			(p.HTTPGet.Port.Type == intstr.String && p.HTTPGet.Port.StrVal != "metrics") ||
			(p.HTTPGet.Port.Type == intstr.Int && int(p.HTTPGet.Port.IntVal) != port):
			t.Errorf("%s: %s probe on port %s, not the --metrics-listen port %d", where, kind, p.HTTPGet.Port.String(), port)
		case p.HTTPGet.Scheme != "" && p.HTTPGet.Scheme != corev1.URISchemeHTTP:
			t.Errorf("%s: %s probe scheme %s; --metrics-listen serves plaintext HTTP", where, kind, p.HTTPGet.Scheme)
		}
	}
}

func portDeclared(p intstr.IntOrString, ports map[int32]string, names map[string]bool) bool {
	if p.Type == intstr.String {
		return names[p.StrVal]
	}
	_, ok := ports[p.IntVal]
	return ok
}

// checkCommandLine: the container runs pgcaravan COMMAND with flags that
// command has, and PGCARAVAN_* variables it reads.
func checkCommandLine(t *testing.T, where string, c *corev1.Container, flags map[string]cliCommand) {
	t.Helper()
	if len(c.Command) > 0 {
		t.Errorf("%s: use the image's entrypoint (pgcaravan); command is %v", where, c.Command)
	}
	if len(c.Args) == 0 {
		t.Errorf("%s: no pgcaravan command", where)
		return
	}
	cmd, ok := flags[c.Args[0]]
	if !ok {
		t.Errorf("%s: %q is not a pgcaravan command", where, c.Args[0])
		return
	}
	for _, a := range c.Args[1:] {
		if !strings.HasPrefix(a, "-") {
			t.Errorf("%s: argument %q is not a flag (pgcaravan %s takes no positional arguments)", where, a, c.Args[0])
			continue
		}
		name, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !cmd.flags[name] {
			t.Errorf("%s: pgcaravan %s has no flag --%s", where, c.Args[0], name)
		}
	}
	for _, e := range c.Env {
		if strings.HasPrefix(e.Name, "PGCARAVAN_") && !strings.Contains(cmd.help, e.Name) {
			t.Errorf("%s: pgcaravan %s does not read %s (its -h does not name it)", where, c.Args[0], e.Name)
		}
	}
}

// cliCommand is one pgcaravan command's flags and help text.
type cliCommand struct {
	flags map[string]bool
	help  string
}

var flagLine = regexp.MustCompile(`^\s+-([a-zA-Z0-9][a-zA-Z0-9-]*)`)

// cliFlags asks the pgcaravan binary, built from this tree, for each
// command's flags.
func cliFlags(t *testing.T) map[string]cliCommand {
	t.Helper()
	bin := pgcaravanBinary(t)
	cmds := map[string]cliCommand{}
	for _, name := range []string{"coordinator", "worker", "cdcnode", "clone"} {
		cmd := exec.Command(bin, name, "-h")
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			var exit *exec.ExitError
			if !errors.As(err, &exit) {
				t.Fatalf("pgcaravan %s -h: %v", name, err)
			}
		}
		c := cliCommand{flags: map[string]bool{}, help: out.String()}
		for line := range strings.Lines(out.String()) {
			if m := flagLine.FindStringSubmatch(line); m != nil {
				c.flags[m[1]] = true
			}
		}
		if len(c.flags) < 3 {
			t.Fatalf("pgcaravan %s -h lists no flags:\n%s", name, out.String())
		}
		cmds[name] = c
	}
	return cmds
}

// checkServices: every Service selects a pod template and targets ports it
// declares; the StatefulSet's serviceName is a rendered headless Service.
func checkServices(t *testing.T, m *manifests) {
	t.Helper()
	pods := podTemplates(m)
	services := map[string]*corev1.Service{}
	for _, o := range m.all("Service") {
		svc := o.(*corev1.Service)
		services[svc.Name] = svc
		var target *corev1.PodTemplateSpec
		for _, p := range pods {
			if matches(svc.Spec.Selector, p.Labels) {
				target = p
			}
		}
		if target == nil {
			t.Errorf("Service %s: selector %v matches no pod template", svc.Name, svc.Spec.Selector)
			continue
		}
		for _, sp := range svc.Spec.Ports {
			found := false
			for _, c := range target.Spec.Containers {
				for _, cp := range c.Ports {
					if (sp.TargetPort.Type == intstr.String && sp.TargetPort.StrVal == cp.Name) ||
						(sp.TargetPort.Type == intstr.Int && sp.TargetPort.IntVal == cp.ContainerPort) {
						found = true
					}
				}
			}
			if !found {
				t.Errorf("Service %s: port %s targets %s, which no container declares", svc.Name, sp.Name, sp.TargetPort.String())
			}
		}
	}
	for _, o := range m.all("StatefulSet") {
		s := o.(*appsv1.StatefulSet)
		svc, ok := services[s.Spec.ServiceName]
		if !ok || svc.Spec.ClusterIP != corev1.ClusterIPNone {
			t.Errorf("StatefulSet %s: serviceName %q must be a rendered headless Service", s.Name, s.Spec.ServiceName)
		}
	}
	// The ServiceMonitor scrapes every component that serves /metrics:
	// the coordinator, the workers and, with follow, the cdcnode.
	want := []string{"coordinator", "worker"}
	for _, o := range m.all("StatefulSet") {
		if c := o.(*appsv1.StatefulSet).Spec.Template.Labels["app.kubernetes.io/component"]; c == "cdcnode" {
			want = append(want, c)
		}
	}
	for _, o := range m.all("ServiceMonitor") {
		sm := o.(*monitoringv1.ServiceMonitor)
		var got []string
		for _, svc := range services {
			if matches(sm.Spec.Selector.MatchLabels, svc.Labels) {
				got = append(got, svc.Labels["app.kubernetes.io/component"])
				if !slices.ContainsFunc(svc.Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == sm.Spec.Endpoints[0].Port }) {
					t.Errorf("ServiceMonitor %s selects Service %s, which has no port %q", sm.Name, svc.Name, sm.Spec.Endpoints[0].Port)
				}
			}
		}
		slices.Sort(got)
		if !slices.Equal(got, slices.Sorted(slices.Values(want))) {
			t.Errorf("ServiceMonitor %s selects the Services of %v; want one each of %v", sm.Name, got, want)
		}
	}
}

func matches(selector, labels map[string]string) bool {
	if len(selector) == 0 {
		return false
	}
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// checkReferences: every Secret, key and ConfigMap a pod names is rendered
// by the chart or is one the values file says exists already.
func checkReferences(t *testing.T, m *manifests, values map[string]any) {
	t.Helper()
	secrets := map[string]map[string]bool{}
	for _, o := range m.all("Secret") {
		s := o.(*corev1.Secret)
		keys := map[string]bool{}
		for k := range s.StringData {
			keys[k] = true
		}
		for k := range s.Data {
			keys[k] = true
		}
		secrets[s.Name] = keys
	}
	existingSecrets := map[string]bool{}
	for _, p := range [][]string{{"database", "existingSecret"}, {"auth", "existingSecret"}, {"tls", "existingSecret"}, {"tls", "clientSecret"}} {
		if s := lookupString(values, p...); s != "" {
			existingSecrets[s] = true
		}
	}
	// Secrets the values mount through extraVolumes exist beforehand too.
	collectSecretNames(values, existingSecrets)
	configMaps := map[string]bool{}
	for _, o := range m.all("ConfigMap") {
		configMaps[o.(*corev1.ConfigMap).Name] = true
	}
	if s := lookupString(values, "filters", "existingConfigMap"); s != "" {
		configMaps[s] = true
	}
	claims := map[string]bool{}
	for _, o := range m.all("PersistentVolumeClaim") {
		claims[o.(*corev1.PersistentVolumeClaim).Name] = true
	}
	secretRef := func(where, name, key string) {
		if existingSecrets[name] {
			return
		}
		keys, ok := secrets[name]
		if !ok {
			t.Errorf("%s: Secret %q is neither rendered nor named in the values", where, name)
			return
		}
		if key != "" && !keys[key] {
			t.Errorf("%s: Secret %q has no key %q", where, name, key)
		}
	}
	for name, pod := range podTemplates(m) {
		for _, c := range pod.Spec.Containers {
			for _, e := range c.Env {
				if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
					secretRef(name+" env "+e.Name, e.ValueFrom.SecretKeyRef.Name, e.ValueFrom.SecretKeyRef.Key)
				}
			}
		}
		for _, v := range pod.Spec.Volumes {
			switch {
			case v.Secret != nil:
				secretRef(name+" volume "+v.Name, v.Secret.SecretName, "")
			case v.ConfigMap != nil:
				if !configMaps[v.ConfigMap.Name] {
					t.Errorf("%s volume %s: ConfigMap %q is neither rendered nor named in the values", name, v.Name, v.ConfigMap.Name)
				}
			case v.PersistentVolumeClaim != nil:
				if !claims[v.PersistentVolumeClaim.ClaimName] {
					t.Errorf("%s volume %s: PersistentVolumeClaim %q is not rendered", name, v.Name, v.PersistentVolumeClaim.ClaimName)
				}
			}
		}
	}
}

// collectSecretNames adds every secretName found in decoded YAML to into.
func collectSecretNames(v any, into map[string]bool) {
	switch v := v.(type) {
	case map[string]any:
		for k, e := range v {
			if name, ok := e.(string); ok && k == "secretName" {
				into[name] = true
			}
			collectSecretNames(e, into)
		}
	case []any:
		for _, e := range v {
			collectSecretNames(e, into)
		}
	}
}

// checkModes: what each mode must and must not render, with and without
// follow.
func checkModes(t *testing.T, m *manifests, values map[string]any) {
	t.Helper()
	count := func(kind string) int { return len(m.all(kind)) }
	follow, _ := lookup(values, "follow").(bool)
	riFull, _ := lookup(values, "migration", "replicaIdentityFull").(bool)
	// checkFollowArgs: --follow (and --replica-identity-full) exactly when
	// the values ask for a live migration.
	checkFollowArgs := func(where string, args []string) {
		t.Helper()
		if got := slices.Contains(args, "--follow"); got != follow {
			t.Errorf("%s: --follow in args is %v, follow is %v; args %v", where, got, follow, args)
		}
		if got := slices.Contains(args, "--replica-identity-full"); got != (follow && riFull) {
			t.Errorf("%s: --replica-identity-full in args is %v; want %v (follow and migration.replicaIdentityFull); args %v", where, got, follow && riFull, args)
		}
	}
	if lookupString(values, "mode") == "job" {
		if count("Job") != 1 || count("StatefulSet") != 0 || count("Deployment") != 0 {
			t.Errorf("mode job renders one Job and no coordinator, workers or cdcnode; got %d Job, %d StatefulSet, %d Deployment",
				count("Job"), count("StatefulSet"), count("Deployment"))
		}
		for _, o := range m.all("Job") {
			j := o.(*batchv1.Job)
			if j.Spec.Template.Spec.RestartPolicy != corev1.RestartPolicyNever {
				t.Errorf("Job %s: a failed clone must not restart in place (restartPolicy Never)", j.Name)
			}
			args := j.Spec.Template.Spec.Containers[0].Args
			if !slices.Contains(args, "--listen=127.0.0.1:7420") {
				t.Errorf("Job %s: the clone's admin API listens on the pod's loopback (no token there); args %v", j.Name, args)
			}
			checkFollowArgs("Job "+j.Name, args)
		}
		return
	}
	statefulSets := map[string]*appsv1.StatefulSet{}
	for _, o := range m.all("StatefulSet") {
		s := o.(*appsv1.StatefulSet)
		statefulSets[s.Spec.Template.Labels["app.kubernetes.io/component"]] = s
	}
	wantSets := 1
	if follow {
		wantSets = 2
	}
	if count("StatefulSet") != wantSets || statefulSets["coordinator"] == nil || (follow != (statefulSets["cdcnode"] != nil)) ||
		count("Deployment") != 1 || count("Job") != 0 {
		t.Fatalf("mode fleet renders a coordinator StatefulSet, a worker Deployment and, with follow (%v), a cdcnode StatefulSet; got StatefulSets %v, %d Deployment, %d Job",
			follow, slices.Collect(maps.Keys(statefulSets)), count("Deployment"), count("Job"))
	}
	sts := statefulSets["coordinator"]
	if len(sts.Spec.VolumeClaimTemplates) != 1 {
		t.Errorf("StatefulSet %s: the coordinator's store needs a PVC", sts.Name)
	}
	checkFollowArgs("StatefulSet "+sts.Name, sts.Spec.Template.Spec.Containers[0].Args)
	workers := m.all("Deployment")[0].(*appsv1.Deployment)
	hpas := m.all("HorizontalPodAutoscaler")
	if len(hpas) > 0 {
		if workers.Spec.Replicas != nil {
			t.Errorf("Deployment %s: with an HPA the replicas field must be absent, or upgrades fight the HPA", workers.Name)
		}
		hpa := hpas[0].(*autoscalingv2.HorizontalPodAutoscaler)
		if hpa.Spec.ScaleTargetRef.Kind != "Deployment" || hpa.Spec.ScaleTargetRef.Name != workers.Name {
			t.Errorf("HPA %s targets %s/%s, not the workers", hpa.Name, hpa.Spec.ScaleTargetRef.Kind, hpa.Spec.ScaleTargetRef.Name)
		}
	} else if workers.Spec.Replicas == nil {
		t.Errorf("Deployment %s: replicas missing without an HPA", workers.Name)
	}
	for _, o := range m.all("PodDisruptionBudget") {
		pdb := o.(*policyv1.PodDisruptionBudget)
		if !matches(pdb.Spec.Selector.MatchLabels, workers.Spec.Template.Labels) {
			t.Errorf("PDB %s does not select the workers", pdb.Name)
		}
	}
	if count("PodDisruptionBudget") != 1 {
		t.Errorf("the workers need a PodDisruptionBudget")
	}
	// The workers and the cdcnode dial the coordinator's Service by name.
	clients := map[string]*corev1.PodSpec{"Deployment " + workers.Name: &workers.Spec.Template.Spec}
	if cdc := statefulSets["cdcnode"]; cdc != nil {
		clients["StatefulSet "+cdc.Name] = &cdc.Spec.Template.Spec
		checkCDCNode(t, cdc)
	}
	for where, spec := range clients {
		var coordAddr string
		for _, e := range spec.Containers[0].Env {
			if e.Name == "PGCARAVAN_COORDINATOR" {
				coordAddr = e.Value
			}
		}
		found := false
		for _, o := range m.all("Service") {
			svc := o.(*corev1.Service)
			for _, p := range svc.Spec.Ports {
				if coordAddr == fmt.Sprintf("%s:%d", svc.Name, p.Port) && svc.Spec.ClusterIP != corev1.ClusterIPNone {
					found = true
				}
			}
		}
		if !found {
			t.Errorf("%s dials %q, which is no port of a rendered ClusterIP Service", where, coordAddr)
		}
	}
}

// checkCDCNode: the cdcnode's spool (--dir) is its PVC, kept when the
// release is uninstalled (it holds changes the source no longer has), and
// it talks to the coordinator with the same credentials as the workers.
func checkCDCNode(t *testing.T, s *appsv1.StatefulSet) {
	t.Helper()
	c := s.Spec.Template.Spec.Containers[0]
	if len(c.Args) == 0 || c.Args[0] != "cdcnode" {
		t.Fatalf("StatefulSet %s runs %v, not pgcaravan cdcnode", s.Name, c.Args)
	}
	if len(s.Spec.VolumeClaimTemplates) != 1 {
		t.Fatalf("StatefulSet %s: the spool needs a PVC", s.Name)
	}
	claim := s.Spec.VolumeClaimTemplates[0].Name
	var dir string
	for _, a := range c.Args {
		if v, ok := strings.CutPrefix(a, "--dir="); ok {
			dir = v
		}
	}
	onClaim := false
	for _, vm := range c.VolumeMounts {
		if vm.Name == claim && (dir == vm.MountPath || strings.HasPrefix(dir, vm.MountPath+"/")) {
			onClaim = true
		}
	}
	if dir == "" || !onClaim {
		t.Errorf("StatefulSet %s: --dir %q (the spool) must be on the PVC %q", s.Name, dir, claim)
	}
	if p := s.Spec.PersistentVolumeClaimRetentionPolicy; p == nil || p.WhenDeleted != appsv1.RetainPersistentVolumeClaimRetentionPolicyType {
		t.Errorf("StatefulSet %s: the spool must outlive an uninstall (persistentVolumeClaimRetentionPolicy.whenDeleted: Retain)", s.Name)
	}
	hasToken := slices.ContainsFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == "PGCARAVAN_AUTH_TOKEN" })
	if !hasToken {
		t.Errorf("StatefulSet %s: the cdcnode needs the coordinator's token (PGCARAVAN_AUTH_TOKEN)", s.Name)
	}
}

// TestChartRefuses: values this version cannot honour fail at template time
// with a message that says what to do.
func TestChartRefuses(t *testing.T) {
	uris := []string{"--set", "database.sourceUri=postgres://s/app", "--set", "database.targetUri=postgres://t/app"}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"replica identity full without follow", append([]string{"--set", "migration.replicaIdentityFull=true"}, uris...), "means nothing without follow: true"},
		{"mode", append([]string{"--set", "mode=online"}, uris...), `mode: "online" is not a mode`},
		{"no database", nil, "set database.existingSecret"},
		{"tls without secret", append([]string{"--set", "tls.enabled=true"}, uris...), "set tls.existingSecret"},
		{"mutual without client secret", append([]string{"--set", "tls.enabled=true", "--set", "tls.existingSecret=x", "--set", "tls.mutual=true"}, uris...), "set tls.clientSecret"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := helmTemplate(t, tc.args...)
			if err == nil {
				t.Fatal("rendered; want a template-time failure")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error does not say %q:\n%v", tc.want, err)
			}
		})
	}
}

// TestChartGeneratedToken: without auth values the chart makes a token, and
// the coordinator and workers read it from the same Secret.
func TestChartGeneratedToken(t *testing.T) {
	out, err := helmTemplate(t, "-f", filepath.Join(chartDir, "ci", "default-values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	m := decodeStrict(t, out)
	var token string
	for _, o := range m.all("Secret") {
		s := o.(*corev1.Secret)
		if strings.HasSuffix(s.Name, "-auth") {
			token = s.StringData["token"]
		}
	}
	if len(token) < 32 {
		t.Fatalf("generated token %q is too short or missing", token)
	}
}
