// Package config reads one Config struct per process from the environment.
//
// Fields are tagged `env:"NAME"` and optionally `default:"value"` and `secret:"true"`.
// Supported kinds: string, bool, int, int64, float64, time.Duration, and nested structs
// (flattened; their fields carry their own env names). Secrets, and the password part of
// any URL, are masked by Describe, which is what a service logs once at start.
//
// Every variable NAME can instead be given as NAME_FILE, the path of a file holding the
// value (trailing whitespace and newline trimmed): the convention of the postgres and
// Grafana images, and how Docker and Kubernetes secrets arrive, mounted as files, so a
// password never shows in `docker inspect` or a process's environment.
package config

import (
	"fmt"
	"net/url"
	"os"
	"reflect"
	"strconv"
	"strings"
	"time"
	"unicode"
)

// Getenv is how a process reads its environment (os.Getenv in main, a map in tests).
type Getenv func(string) string

// Load fills cfg (a pointer to a struct) from getenv, falling back to defaults. It returns
// one error naming every variable that could not be read or parsed. An error never holds
// a value read from a file, nor a secret: it names the variable (and the file).
func Load(getenv Getenv, cfg any) error {
	v := reflect.ValueOf(cfg)
	if v.Kind() != reflect.Pointer || v.Elem().Kind() != reflect.Struct {
		return fmt.Errorf("config: want pointer to struct, got %T", cfg)
	}
	var problems []string
	load(getenv, v.Elem(), &problems)
	if len(problems) > 0 {
		return fmt.Errorf("config: %s", strings.Join(problems, "; "))
	}
	return nil
}

func load(getenv Getenv, v reflect.Value, problems *[]string) {
	t := v.Type()
	for i := range t.NumField() {
		f, fv := t.Field(i), v.Field(i)
		if !f.IsExported() && !f.Anonymous {
			continue
		}
		name := f.Tag.Get("env")
		if name == "" {
			if fv.Kind() == reflect.Struct {
				load(getenv, fv, problems)
			}
			continue
		}
		raw, from, err := lookup(getenv, name)
		if err != nil {
			*problems = append(*problems, err.Error())
			continue
		}
		if raw == "" {
			raw = f.Tag.Get("default")
		}
		if raw == "" {
			continue
		}
		if err := set(fv, raw); err != nil {
			// strconv's and time's errors quote the value, so a value the log must
			// not show gets a message of its own.
			hidden := fmt.Sprintf("not a valid %s", fv.Type())
			switch {
			case from != "":
				*problems = append(*problems, fmt.Sprintf("%s (read from %s_FILE=%s): %s", name, name, from, hidden))
			case f.Tag.Get("secret") == "true":
				*problems = append(*problems, fmt.Sprintf("%s=****: %s", name, hidden))
			default:
				*problems = append(*problems, fmt.Sprintf("%s=%q: %v", name, MaskURL(raw), err))
			}
		}
	}
}

// lookup returns the value of name: getenv(name), or else the content of the file
// getenv(name+"_FILE") names (from: that path). Both set is an error rather than a
// silent choice: a learner who sets DATABASE_URL by hand over compose's secret file
// should hear which one is meant, not guess why the other is ignored.
func lookup(getenv Getenv, name string) (raw, from string, err error) {
	raw, path := getenv(name), getenv(name+"_FILE")
	if path == "" {
		return raw, "", nil
	}
	if raw != "" {
		return "", "", fmt.Errorf("%s and %s_FILE are both set (ambiguous): unset one", name, name)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		// The path is said, the content never (there is none to say yet, but a wrapped
		// error from elsewhere must not start carrying it either).
		return "", "", fmt.Errorf("%s_FILE=%s: cannot read the file: %w", name, path, err)
	}
	raw = strings.TrimRightFunc(string(b), unicode.IsSpace)
	if raw == "" {
		// Empty would fall back to the default: a dev password where a secret was meant.
		return "", "", fmt.Errorf("%s_FILE=%s: the file is empty", name, path)
	}
	return raw, path, nil
}

func set(v reflect.Value, raw string) error {
	if v.Type() == reflect.TypeFor[time.Duration]() {
		d, err := time.ParseDuration(raw)
		if err != nil {
			return err
		}
		v.SetInt(int64(d))
		return nil
	}
	switch v.Kind() {
	case reflect.String:
		v.SetString(raw)
	case reflect.Bool:
		b, err := strconv.ParseBool(raw)
		if err != nil {
			return err
		}
		v.SetBool(b)
	case reflect.Int, reflect.Int64:
		n, err := strconv.ParseInt(raw, 10, 64)
		if err != nil {
			return err
		}
		v.SetInt(n)
	case reflect.Float64:
		n, err := strconv.ParseFloat(raw, 64)
		if err != nil {
			return err
		}
		v.SetFloat(n)
	default:
		return fmt.Errorf("unsupported kind %s", v.Kind())
	}
	return nil
}

// Describe returns the effective configuration as name → value with secrets masked, for
// the one log line a process writes at start.
func Describe(cfg any) map[string]string {
	out := map[string]string{}
	v := reflect.Indirect(reflect.ValueOf(cfg))
	describe(v, out)
	return out
}

func describe(v reflect.Value, out map[string]string) {
	t := v.Type()
	for i := range t.NumField() {
		f, fv := t.Field(i), v.Field(i)
		if !f.IsExported() && !f.Anonymous {
			continue
		}
		name := f.Tag.Get("env")
		if name == "" {
			if fv.Kind() == reflect.Struct {
				describe(fv, out)
			}
			continue
		}
		val := fmt.Sprint(fv.Interface())
		switch {
		case f.Tag.Get("secret") == "true" && val != "":
			val = "****"
		default:
			val = MaskURL(val)
		}
		out[name] = val
	}
}

// MaskURL hides the password of a URL ("amqp://guest:****@host/"); other strings are
// returned unchanged. A URL that does not parse (a password with a "/" or "#" the writer
// forgot to percent-encode) loses everything between "://" and its last "@": better a
// log line that says less than one that shows a secret.
func MaskURL(s string) string {
	scheme, rest, ok := strings.Cut(s, "://")
	if !ok {
		return s
	}
	u, err := url.Parse(s)
	if err != nil {
		if at := strings.LastIndex(rest, "@"); at >= 0 {
			return scheme + "://****" + rest[at:]
		}
		return s
	}
	if u.User == nil {
		return s
	}
	if _, ok := u.User.Password(); ok {
		u.User = url.UserPassword(u.User.Username(), "****")
		return strings.Replace(u.String(), "%2A%2A%2A%2A", "****", 1)
	}
	return s
}
