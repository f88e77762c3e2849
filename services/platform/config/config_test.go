package config

import (
	"os"
	"path/filepath"
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

// secretFile writes content to a file of its own and returns the path.
func secretFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadFromFiles(t *testing.T) {
	const pw = "f1le-pw"
	url := secretFile(t, "db_url", "postgres://u:"+pw+"@db:5432/db\n")
	secret := secretFile(t, "secret", "  s3cret \r\n\n")
	n := secretFile(t, "n", "7\n")
	empty := secretFile(t, "empty", "\n")
	bad := secretFile(t, "bad", "not-a-number-"+pw+"\n")
	missing := filepath.Join(t.TempDir(), "no-such-file")

	tests := []struct {
		name string
		env  map[string]string
		want func(sample) bool // on success
		errs []string          // on failure: what the error names
	}{
		{name: "values from files, trailing whitespace trimmed",
			env: map[string]string{"DB_URL_FILE": url, "SECRET_FILE": secret, "N_FILE": n},
			want: func(c sample) bool {
				return c.URL == "postgres://u:"+pw+"@db:5432/db" && c.Secret == "  s3cret" && c.N == 7
			}},
		{name: "an unset _FILE leaves the variable and its default alone",
			env:  map[string]string{"SECRET": "plain", "N_FILE": ""},
			want: func(c sample) bool { return c.Secret == "plain" && c.N == 3 }},
		{name: "both set is ambiguous",
			env:  map[string]string{"SECRET": "plain", "SECRET_FILE": secret},
			errs: []string{"SECRET and SECRET_FILE", "ambiguous"}},
		{name: "an unreadable file names the variable and the path",
			env:  map[string]string{"DB_URL_FILE": missing},
			errs: []string{"DB_URL_FILE=" + missing}},
		{name: "an empty file is refused, not replaced by the default",
			env:  map[string]string{"DB_URL_FILE": empty},
			errs: []string{"DB_URL_FILE=" + empty, "empty"}},
		{name: "a value from a file that does not parse is named, not shown",
			env:  map[string]string{"N_FILE": bad},
			errs: []string{"N (read from N_FILE=" + bad + ")"}},
		{name: "every problem at once",
			env:  map[string]string{"SECRET": "x", "SECRET_FILE": secret, "DB_URL_FILE": missing, "N_FILE": bad},
			errs: []string{"SECRET and SECRET_FILE", "DB_URL_FILE=", "N_FILE="}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var c sample
			err := Load(func(k string) string { return tt.env[k] }, &c)
			if tt.errs == nil {
				if err != nil {
					t.Fatal(err)
				}
				if !tt.want(c) {
					t.Fatalf("unexpected config %+v", c)
				}
				return
			}
			if err == nil {
				t.Fatalf("want an error naming %q, got none (config %+v)", tt.errs, c)
			}
			for _, s := range tt.errs {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not name %q", err, s)
				}
			}
			if strings.Contains(err.Error(), pw) || strings.Contains(err.Error(), "s3cret") {
				t.Errorf("error shows a file's content: %v", err)
			}
		})
	}

	// What a process logs at start masks values from files as it masks the environment's.
	var c sample
	if err := Load(func(k string) string {
		return map[string]string{"DB_URL_FILE": url, "SECRET_FILE": secret}[k]
	}, &c); err != nil {
		t.Fatal(err)
	}
	d := Describe(c)
	if d["SECRET"] != "****" || d["DB_URL"] != "postgres://u:****@db:5432/db" {
		t.Fatalf("values from files not masked: %v", d)
	}
}

func TestLoadMasksSecretsInParseErrors(t *testing.T) {
	type withSecretInt struct {
		Pin int `env:"PIN" secret:"true"`
	}
	var c withSecretInt
	err := Load(func(k string) string { return map[string]string{"PIN": "12a4"}[k] }, &c)
	if err == nil || !strings.Contains(err.Error(), "PIN=****") || strings.Contains(err.Error(), "12a4") {
		t.Fatalf("want an error naming PIN with its value masked, got %v", err)
	}
}

func TestMaskURL(t *testing.T) {
	for in, want := range map[string]string{
		"amqp://guest:guest@127.0.0.1:5672/":      "amqp://guest:****@127.0.0.1:5672/",
		"postgres://u:p%2Fw@db/x?sslmode=disable": "postgres://u:****@db/x?sslmode=disable",
		"http://127.0.0.1:9090":                   "http://127.0.0.1:9090",
		"postgres://only-user@db/x":               "postgres://only-user@db/x",
		"not a url":                               "not a url",
		"postgres://u:pa/ss@db:5432/x":            "postgres://****@db:5432/x", // does not parse: the userinfo goes
		"postgres://u:pa#ss@db:5432/x":            "postgres://****@db:5432/x",
		"amqp://u:p@ss@rabbit:5672/":              "amqp://u:****@rabbit:5672/", // the last @ ends the userinfo
		"postgres://u:pa%zz@db:5432/x?a=1":        "postgres://****@db:5432/x?a=1",
	} {
		if got := MaskURL(in); got != want {
			t.Errorf("MaskURL(%q) = %q, want %q", in, got, want)
		}
	}
}
