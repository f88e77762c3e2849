package stack

import (
	"strings"
	"testing"
)

// Compose gives every process the variables `lab up` gives it: the same names, with
// secret-bearing ones read from files (X_FILE) and INSTANCE_ID left to each container.
// One added natively and forgotten for compose fails here.
func TestComposeEnvHasTheNativeVariables(t *testing.T) {
	cfg := Config{AdminDatabaseURL: "postgres://postgres@127.0.0.1:5432/postgres", AMQPURL: "amqp://guest:guest@127.0.0.1:5672/", Host: "127.0.0.1"}
	fromFile := map[string]bool{"AMQP_URL": true, "LAB_DATABASE_URL": true, "DATABASE_URL": true, "RABBITMQ_MANAGEMENT_URL": true, "JWT_SEED": true}
	// The browser-facing UIs exist in compose only (the native Jaeger has no UI assets).
	composeOnly := map[string]bool{"GOMEMLIMIT": true, "RABBITMQ_MANAGEMENT_URL_FILE": true, "JWT_SEED_FILE": true,
		"JAEGER_UI_URL": true, "GRAFANA_URL": true, "GRAFANA_HEALTH_URL": true}
	for k := range DashboardLimits {
		composeOnly[k] = true
	}
	for _, s := range Services {
		native, err := cfg.Env(s, s.Name+"-1")
		if err != nil {
			t.Fatal(err)
		}
		compose, err := ComposeEnv(s)
		if err != nil {
			t.Fatal(err)
		}
		for _, kv := range native {
			k, _, _ := strings.Cut(kv, "=")
			if k == "INSTANCE_ID" {
				if _, ok := compose[k]; ok {
					t.Errorf("%s: compose sets INSTANCE_ID: replicas would share it", s.Name)
				}
				continue
			}
			if fromFile[k] {
				k += "_FILE"
			}
			if _, ok := compose[k]; !ok && k != "GOMEMLIMIT" {
				t.Errorf("%s: natively %s is set, compose gives no %s", s.Name, kv, k)
			}
		}
		for k, v := range compose {
			if strings.HasSuffix(k, "_FILE") && !strings.HasPrefix(v, SecretsDir+"/") {
				t.Errorf("%s: %s=%s is not in the secrets volume", s.Name, k, v)
			}
			base := strings.TrimSuffix(k, "_FILE")
			if !composeOnly[k] && !strings.Contains(strings.Join(native, "\n"), base+"=") {
				t.Errorf("%s: compose sets %s, which `lab up` does not", s.Name, k)
			}
		}
	}
}
