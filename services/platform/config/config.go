// Package config reads one Config struct per process from the environment.
//
// Fields are tagged `env:"NAME"` and optionally `default:"value"` and `secret:"true"`.
// Supported kinds: string, bool, int, int64, float64, time.Duration, and nested structs
// (flattened; their fields carry their own env names). Secrets, and the password part of
// any URL, are masked by Describe, which is what a service logs once at start.
package config

import (
	"fmt"
	"net/url"
	"reflect"
	"strconv"
	"strings"
	"time"
)

// Getenv is how a process reads its environment (os.Getenv in main, a map in tests).
type Getenv func(string) string

// Load fills cfg (a pointer to a struct) from getenv, falling back to defaults. It returns
// one error naming every variable that could not be parsed.
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
		raw := getenv(name)
		if raw == "" {
			raw = f.Tag.Get("default")
		}
		if raw == "" {
			continue
		}
		if err := set(fv, raw); err != nil {
			*problems = append(*problems, fmt.Sprintf("%s=%q: %v", name, raw, err))
		}
	}
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
// returned unchanged.
func MaskURL(s string) string {
	if !strings.Contains(s, "://") {
		return s
	}
	u, err := url.Parse(s)
	if err != nil || u.User == nil {
		return s
	}
	if _, ok := u.User.Password(); ok {
		u.User = url.UserPassword(u.User.Username(), "****")
		return strings.Replace(u.String(), "%2A%2A%2A%2A", "****", 1)
	}
	return s
}
