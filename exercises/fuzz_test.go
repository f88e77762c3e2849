package exercises

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

// FuzzParse: Parse never panics, reports every problem as a *FieldError of the file it
// was given, and an exercise it accepts round-trips: Marshal then Parse gives it back.
// The seeds (testdata/fuzz/FuzzParse) are the committed exercises and a few broken ones.
func FuzzParse(f *testing.F) {
	f.Add([]byte(base))
	f.Fuzz(func(t *testing.T, data []byte) {
		e, err := Parse(file, data)
		if err != nil {
			for _, one := range unjoin(err) {
				var fe *FieldError
				if !errors.As(one, &fe) || fe.File != file {
					t.Fatalf("%T %q is not a *FieldError of %s", one, one, file)
				}
			}
			return
		}
		out, err := Marshal(e)
		if err != nil {
			t.Fatalf("accepted, but does not marshal: %v", err)
		}
		back, err := Parse(file, out)
		if err != nil {
			t.Fatalf("accepted, marshalled, and then refused: %v\n%s", err, out)
		}
		if !reflect.DeepEqual(e, back) {
			t.Fatalf("marshal then parse gives another exercise:\n%#v\n%#v\n%s", e, back, out)
		}
	})
}

func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

// The seeds say what they are: valid-* parse, invalid-* do not.
func TestFuzzSeeds(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzParse")
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, ent := range entries {
		raw, err := os.ReadFile(filepath.Join(dir, ent.Name()))
		if err != nil {
			t.Fatal(err)
		}
		_, quoted, _ := strings.Cut(strings.TrimSpace(string(raw)), "\n[]byte(")
		data, err := strconv.Unquote(strings.TrimSuffix(quoted, ")"))
		if err != nil {
			t.Fatalf("%s: not a seed: %v", ent.Name(), err)
		}
		_, err = Parse(file, []byte(data))
		switch valid := strings.HasPrefix(ent.Name(), "valid-"); {
		case valid && err != nil:
			t.Errorf("%s: %v", ent.Name(), err)
		case !valid && err == nil:
			t.Errorf("%s: parses, want an error", ent.Name())
		}
	}
}
