package exercises

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// builtin holds the committed exercises: one NN-slug directory each.
//
//go:embed [0-9][0-9]-*
var builtin embed.FS

// Builtin is the exercises committed in this package, as Load reads them.
func Builtin() fs.FS { return builtin }

// Parse reads one exercise.yaml. path is its path in the repository
// (exercises/07-outbox/exercise.yaml): errors name it, and the exercise's id must be its
// directory's name. Every problem found is reported, each as a *FieldError
// (file:line: field: message), in the order of their lines. What needs the other
// exercises (prerequisites) is Load's to check; README stays empty.
func Parse(path string, data []byte) (Exercise, error) {
	e, d := parse(path, data)
	if err := join(d.errs); err != nil {
		return Exercise{}, err
	}
	return e, nil
}

var yamlLine = regexp.MustCompile(`^yaml: line ([0-9]+): (.*)$`)

// parserError tells libyaml's parser errors (parserc.go) from its scanner's.
func parserError(msg string) bool {
	return strings.HasPrefix(msg, "did not find expected") || slices.Contains([]string{"found duplicate %TAG directive",
		"found duplicate %YAML directive", "found incompatible YAML document", "found undefined tag handle"}, msg)
}

func parse(file string, data []byte) (Exercise, *decoder) {
	d := &decoder{errorList: &errorList{file: file}, lines: map[string]int{"": 1}}
	var root yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&root); err != nil {
		if errors.Is(err, io.EOF) {
			d.add(0, "", "empty file: want an exercise (id, title, patterns, level, minutes, setup, steps, cleanup)")
			return Exercise{}, d
		}
		line, msg := 0, strings.TrimPrefix(err.Error(), "yaml: ")
		if m := yamlLine.FindStringSubmatch(err.Error()); m != nil {
			line, _ = strconv.Atoi(m[1])
			msg = m[2]
		}
		if parserError(msg) {
			// yaml.v3 (v3.0.1) numbers a parser error's line from 0, and leaves out line 0;
			// its scanner errors it numbers from 1.
			line++
		}
		d.add(line, "", "not YAML: %s", msg)
		return Exercise{}, d
	}
	var more yaml.Node
	if err := dec.Decode(&more); !errors.Is(err, io.EOF) {
		d.add(more.Line, "", "one YAML document per file (found a second one)")
		return Exercise{}, d
	}
	var e Exercise
	if len(root.Content) == 0 || isNull(root.Content[0]) {
		d.add(0, "", "empty file: want an exercise (id, title, patterns, level, minutes, setup, steps, cleanup)")
		return Exercise{}, d
	}
	top := root.Content[0]
	if top.Kind != yaml.MappingNode {
		d.add(top.Line, "", "want a mapping of fields (id, title, ...), got %s", describe(top))
		return Exercise{}, d
	}
	d.value(top, reflect.ValueOf(&e).Elem(), "")
	(&validator{d: d}).exercise(&e, path.Base(path.Dir(file)))
	return e, d
}

// Load reads every exercise of fsys, whose top level holds one NN-slug directory per
// exercise with its exercise.yaml and README.md (Builtin: the committed ones). Files
// beside the directories are ignored. It checks each exercise as Parse does, that it
// has a README, and what takes all of them: that ids and numbers are unique and that
// every prerequisite exists, without cycles. Every problem of every file is reported
// (errors.Join of *FieldError, by file and line); on any, no exercise is returned.
// Files are named exercises/NN-slug/..., as in the repository.
func Load(fsys fs.FS) ([]Exercise, error) {
	entries, err := fs.ReadDir(fsys, ".")
	if err != nil {
		return nil, fmt.Errorf("load exercises: %w", err)
	}
	var errs []*FieldError
	type loaded struct {
		e Exercise
		d *decoder
	}
	var all []loaded
	for _, ent := range entries {
		if !ent.IsDir() {
			continue
		}
		dir := ent.Name()
		base := "exercises/" + dir
		if !idPattern.MatchString(dir) {
			errs = append(errs, &FieldError{File: base, Msg: "not an exercise directory: name it NN-slug, like 07-outbox"})
			continue
		}
		file := base + "/exercise.yaml"
		data, err := fs.ReadFile(fsys, dir+"/exercise.yaml")
		if err != nil {
			errs = append(errs, &FieldError{File: file, Msg: fmt.Sprintf("missing: every exercise has its exercise.yaml (%v)", err)})
			continue
		}
		e, d := parse(file, data)
		errs = append(errs, d.errs...)
		readme, err := fs.ReadFile(fsys, dir+"/README.md")
		switch {
		case err != nil:
			errs = append(errs, &FieldError{File: base + "/README.md", Msg: "missing: every exercise has a README.md for the learner"})
		case len(bytes.TrimSpace(readme)) == 0:
			errs = append(errs, &FieldError{File: base + "/README.md", Msg: "empty: every exercise has a README.md for the learner"})
		}
		e.README = string(readme)
		if len(d.errs) == 0 {
			all = append(all, loaded{e, d})
		}
	}

	// Unique ids and numbers; prerequisites that exist.
	byID := map[string]int{}
	byNumber := map[string]string{}
	for i, l := range all {
		if other, dup := byID[l.e.ID]; dup {
			l.d.errf("id", "%q is also the id of %s", l.e.ID, all[other].d.file)
			continue
		}
		byID[l.e.ID] = i
		num, _, _ := strings.Cut(l.e.ID, "-")
		if other, dup := byNumber[num]; dup {
			l.d.errf("id", "number %s is taken by %s: give each exercise its own number", num, other)
		}
		byNumber[num] = l.e.ID
	}
	ids := make([]string, 0, len(byID))
	for id := range byID {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, l := range all {
		for i, p := range l.e.Prerequisites {
			if _, ok := byID[p]; !ok {
				l.d.errf(fmt.Sprintf("prerequisites[%d]", i), "no exercise %q (exercises: %s)", p, list(ids))
			}
		}
	}

	// No cycles: a depth-first walk, where reaching an exercise still on the path closes one.
	const (
		unseen = iota
		onPath
		done
	)
	state := map[string]int{}
	var walk func(id string, path []string)
	walk = func(id string, path []string) {
		state[id] = onPath
		path = append(path, id)
		l := all[byID[id]]
		for i, p := range l.e.Prerequisites {
			if _, ok := byID[p]; !ok {
				continue
			}
			switch state[p] {
			case onPath:
				cycle := append(slices.Clone(path[slices.Index(path, p):]), p)
				l.d.errf(fmt.Sprintf("prerequisites[%d]", i), "prerequisite cycle: %s", strings.Join(cycle, " → "))
			case unseen:
				walk(p, path)
			}
		}
		state[id] = done
	}
	for _, id := range ids {
		if state[id] == unseen {
			walk(id, nil)
		}
	}

	out := make([]Exercise, 0, len(all))
	for _, l := range all {
		errs = append(errs, l.d.errs...)
		out = append(out, l.e)
	}
	if err := join(errs); err != nil {
		return nil, err
	}
	slices.SortFunc(out, func(a, b Exercise) int { return strings.Compare(a.ID, b.ID) })
	return out, nil
}
