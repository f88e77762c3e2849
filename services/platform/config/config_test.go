package config

import (
	"strings"
	"testing"
	"time"
)

type inner struct {
	URL string `env:"DB_URL" default:"postgres://u:pw@localhost/db"`
}

type sample struct {
	inner
	Addr    string        `env:"ADDR" default:"127.0.0.1:1"`
	Secret  string        `env:"SECRET" secret:"true"`
	Timeout time.Duration `env:"TIMEOUT" default:"2s"`
	N       int           `env:"N" default:"3"`
	On      bool          `env:"ON"`
}

func TestLoadDefaultsOverridesAndErrors(t *testing.T) {
	env := map[string]string{"ADDR": "127.0.0.1:9", "SECRET": "s3cret", "ON": "true"}
	var c sample
	if err := Load(func(k string) string { return env[k] }, &c); err != nil {
		t.Fatal(err)
	}
	if c.Addr != "127.0.0.1:9" || c.Timeout != 2*time.Second || c.N != 3 || !c.On || c.URL == "" {
		t.Fatalf("unexpected config %+v", c)
	}
	d := Describe(c)
	if d["SECRET"] != "****" || strings.Contains(d["DB_URL"], "pw") || !strings.Contains(d["DB_URL"], "****") {
		t.Fatalf("secrets not masked: %v", d)
	}

	env = map[string]string{"TIMEOUT": "soon", "N": "many"}
	err := Load(func(k string) string { return env[k] }, &c)
	if err == nil || !strings.Contains(err.Error(), "TIMEOUT") || !strings.Contains(err.Error(), "N=") {
		t.Fatalf("want an error naming both bad variables, got %v", err)
	}
}
