// Package deploy holds the Kubernetes manifests and the docker-compose
// config of Keystone, and the tests that check them. It is a module of its
// own so the Kubernetes API types stay out of the gateway's dependencies.
package deploy

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/keystone-gateway/keystone/config"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"sigs.k8s.io/yaml"
)

// manifests decodes every document of deploy/kubernetes/*.yaml strictly
// (an unknown or misspelt field fails) into its Kubernetes API type.
func manifests(t *testing.T) map[string]any {
	t.Helper()
	files, err := filepath.Glob("kubernetes/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests in deploy/kubernetes: %v", err)
	}
	out := map[string]any{}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for i, doc := range bytes.Split(data, []byte("\n---\n")) {
			var meta struct {
				APIVersion string `json:"apiVersion"`
				Kind       string `json:"kind"`
			}
			if err := yaml.Unmarshal(doc, &meta); err != nil {
				t.Fatalf("%s document %d: %v", f, i, err)
			}
			var obj any
			switch meta.APIVersion + " " + meta.Kind {
			case "apps/v1 Deployment":
				obj = &appsv1.Deployment{}
			case "v1 Service":
				obj = &corev1.Service{}
			case "v1 ConfigMap":
				obj = &corev1.ConfigMap{}
			case "autoscaling/v2 HorizontalPodAutoscaler":
				obj = &autoscalingv2.HorizontalPodAutoscaler{}
			case "policy/v1 PodDisruptionBudget":
				obj = &policyv1.PodDisruptionBudget{}
			default:
				t.Fatalf("%s document %d: unexpected %s %s", f, i, meta.APIVersion, meta.Kind)
			}
			if err := yaml.UnmarshalStrict(doc, obj); err != nil {
				t.Fatalf("%s document %d (%s): %v", f, i, meta.Kind, err)
			}
			out[meta.Kind] = obj
		}
	}
	return out
}

func TestManifestsDecodeStrictlyAndFitTogether(t *testing.T) {
	m := manifests(t)
	for _, kind := range []string{"Deployment", "Service", "ConfigMap", "HorizontalPodAutoscaler", "PodDisruptionBudget"} {
		if m[kind] == nil {
			t.Fatalf("no %s manifest", kind)
		}
	}
	dep := m["Deployment"].(*appsv1.Deployment)
	svc := m["Service"].(*corev1.Service)
	cm := m["ConfigMap"].(*corev1.ConfigMap)
	hpa := m["HorizontalPodAutoscaler"].(*autoscalingv2.HorizontalPodAutoscaler)
	pdb := m["PodDisruptionBudget"].(*policyv1.PodDisruptionBudget)

	labels := dep.Spec.Template.Labels
	matches := func(sel map[string]string) bool {
		for k, v := range sel {
			if labels[k] != v {
				return false
			}
		}
		return len(sel) > 0
	}
	if !matches(dep.Spec.Selector.MatchLabels) || !matches(svc.Spec.Selector) || !matches(pdb.Spec.Selector.MatchLabels) {
		t.Error("the Deployment's, Service's and PodDisruptionBudget's selectors must all select the pod template's labels")
	}
	if ref := hpa.Spec.ScaleTargetRef; ref.Kind != "Deployment" || ref.Name != dep.Name {
		t.Errorf("HPA scales %s %q, want the Deployment %q", ref.Kind, ref.Name, dep.Name)
	}
	if hpa.Spec.MinReplicas == nil || *hpa.Spec.MinReplicas < 2 {
		t.Error("HPA minReplicas must keep at least 2 pods (the PDB's minAvailable 1 then leaves one serving)")
	}

	c := dep.Spec.Template.Spec.Containers[0]
	for name, p := range map[string]*corev1.Probe{"readiness": c.ReadinessProbe, "liveness": c.LivenessProbe} {
		if p == nil || p.Exec == nil || !slices.Equal(p.Exec.Command, []string{"/usr/local/bin/keystone", "healthcheck"}) {
			t.Errorf("%s probe must run `keystone healthcheck` (the health endpoint), got %+v", name, p)
		}
	}
	var cfgPath string
	for _, e := range c.Env {
		if e.Name == "KEYSTONE_CONFIG" {
			cfgPath = e.Value
		}
	}
	var mount string
	for _, vm := range c.VolumeMounts {
		if vm.Name == "config" {
			mount = vm.MountPath
			if vm.SubPath != "" {
				t.Error("the config volume is mounted with subPath: ConfigMap updates would never reach the pod")
			}
		}
	}
	if mount == "" || filepath.Dir(cfgPath) != mount {
		t.Errorf("KEYSTONE_CONFIG %q is not in the config volume mounted at %q", cfgPath, mount)
	}

	// The config the ConfigMap holds loads, with its scripts where the
	// volume's items put them.
	files := fstest.MapFS{}
	var vol *corev1.Volume
	for i := range dep.Spec.Template.Spec.Volumes {
		if dep.Spec.Template.Spec.Volumes[i].Name == "config" {
			vol = &dep.Spec.Template.Spec.Volumes[i]
		}
	}
	if vol == nil || vol.ConfigMap == nil || vol.ConfigMap.Name != cm.Name {
		t.Fatalf("the config volume must be the ConfigMap %q", cm.Name)
	}
	for _, it := range vol.ConfigMap.Items {
		data, ok := cm.Data[it.Key]
		if !ok {
			t.Fatalf("volume item %q is not in the ConfigMap", it.Key)
		}
		files[it.Path] = &fstest.MapFile{Data: []byte(data)}
	}
	cfgFile := filepath.Base(cfgPath)
	env := map[string]string{"KEYSTONE_ADMIN_TOKEN": "t0ken", "REDIS_ADDR": "redis:6379"}
	scripts, err := fsSub(files, "scripts")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse(cfgFile, files[cfgFile].Data, config.WithEnv(func(k string) (string, bool) { v, ok := env[k]; return v, ok }),
		config.WithScripts(scripts, "scripts"))
	if err != nil {
		t.Fatalf("the ConfigMap's %s does not load:\n%v", cfgFile, err)
	}

	// Shutdown: preStop, then shutdown_grace, inside the grace period.
	pre := c.Lifecycle.PreStop
	if pre == nil || pre.Sleep == nil {
		t.Fatal("no preStop sleep: pods would get traffic after SIGTERM while endpoints update")
	}
	need := time.Duration(pre.Sleep.Seconds)*time.Second + cfg.Server.ShutdownGrace.D()
	if got := time.Duration(*dep.Spec.Template.Spec.TerminationGracePeriodSeconds) * time.Second; got <= need {
		t.Errorf("terminationGracePeriodSeconds %v must exceed preStop %ds + shutdown_grace %v", got, pre.Sleep.Seconds, cfg.Server.ShutdownGrace)
	}
	if cfg.Shared.Store != "redis" {
		t.Errorf("several replicas need shared.store redis to share limits, got %q", cfg.Shared.Store)
	}
}

// TestComposeConfigLoads loads the config docker-compose.yaml mounts.
func TestComposeConfigLoads(t *testing.T) {
	cfg, err := config.Load("compose/keystone.yaml")
	if err != nil {
		t.Fatalf("deploy/compose/keystone.yaml:\n%v", err)
	}
	if cfg.Shared.Store != "redis" || cfg.Shared.Redis.Addr != "redis:6379" {
		t.Errorf("shared %+v, want store redis at the compose service redis:6379", cfg.Shared)
	}
	compose, err := os.ReadFile("../docker-compose.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Services map[string]struct {
			Environment map[string]string `json:"environment"`
			Volumes     []string          `json:"volumes"`
		} `json:"services"`
	}
	if err := yaml.Unmarshal(compose, &doc); err != nil {
		t.Fatal(err)
	}
	n := 0
	for name, s := range doc.Services {
		if !strings.HasPrefix(name, "keystone") {
			continue
		}
		n++
		if s.Environment["KEYSTONE_CONFIG"] != "/etc/keystone/compose/keystone.yaml" || !slices.Contains(s.Volumes, "./deploy/compose:/etc/keystone/compose:ro") {
			t.Errorf("service %s does not run deploy/compose/keystone.yaml", name)
		}
	}
	if n != 2 {
		t.Errorf("%d keystone services, want 2", n)
	}
	for _, s := range []string{"redis", "demo"} {
		if _, ok := doc.Services[s]; !ok {
			t.Errorf("no %s service", s)
		}
	}
}

func fsSub(m fstest.MapFS, dir string) (fstest.MapFS, error) {
	out := fstest.MapFS{}
	for p, f := range m {
		if rest, ok := strings.CutPrefix(p, dir+"/"); ok {
			out[rest] = f
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no files under %s/ in the config volume", dir)
	}
	return out, nil
}

// TestStrictDecodingRejectsMisspeltFields shows the decoding the manifests
// pass is strict: a misspelt field fails instead of being dropped.
func TestStrictDecodingRejectsMisspeltFields(t *testing.T) {
	doc := []byte("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec:\n  replica: 2\n")
	if err := yaml.UnmarshalStrict(doc, &appsv1.Deployment{}); err == nil || !strings.Contains(err.Error(), "replica") {
		t.Errorf("a misspelt field decoded without error: %v", err)
	}
}
