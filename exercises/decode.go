package exercises

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"reflect"
	"slices"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// FieldError is one problem of an exercise file: where it is and what is wrong.
type FieldError struct {
	File  string // exercises/07-outbox/exercise.yaml
	Line  int    // 1-based; 0 when the problem is the file itself
	Field string // steps[1].check.kind; "" when the problem is the file itself
	Msg   string
}

func (e *FieldError) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		b.WriteString(":" + strconv.Itoa(e.Line))
	}
	b.WriteString(": ")
	if e.Field != "" {
		b.WriteString(e.Field + ": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// errorList is the problems found so far, reported together, in the order of their lines.
type errorList struct {
	file string
	errs []*FieldError
	bad  map[string]bool // fields with a problem already
}

func (l *errorList) add(line int, field, format string, args ...any) {
	l.errs = append(l.errs, &FieldError{File: l.file, Line: line, Field: field, Msg: fmt.Sprintf(format, args...)})
	if l.bad == nil {
		l.bad = map[string]bool{}
	}
	l.bad[field] = true
}

// reported says whether path, or a field that contains it, has a problem already: one
// that could not be decoded is not also reported as missing or invalid.
func (l *errorList) reported(path string) bool {
	for {
		if l.bad[path] {
			return true
		}
		i := strings.LastIndexAny(path, ".[")
		if i < 0 {
			return false
		}
		path = path[:i]
	}
}

// join sorts the problems by file and line and joins them (nil if there are none).
func join(errs []*FieldError) error {
	slices.SortStableFunc(errs, func(a, b *FieldError) int {
		return cmp.Or(cmp.Compare(a.File, b.File), cmp.Compare(a.Line, b.Line))
	})
	out := make([]error, len(errs))
	for i, e := range errs {
		out[i] = e
	}
	return errors.Join(out...)
}

// decoder turns a yaml.Node tree into the format's types, strictly (an unknown or
// repeated field is an error), recording the line of every field it decodes so that
// validation can name where a problem is.
type decoder struct {
	*errorList
	lines map[string]int // field path → line
}

// nodeDecoder is implemented by the types whose YAML shape is not their Go shape.
type nodeDecoder interface {
	decodeNode(d *decoder, n *yaml.Node, path string)
}

// line is where path is, or else where the nearest field that contains it is.
func (d *decoder) line(path string) int {
	for {
		if l, ok := d.lines[path]; ok {
			return l
		}
		i := strings.LastIndexAny(path, ".[")
		if i < 0 {
			return d.lines[""]
		}
		path = path[:i]
	}
}

// errf reports a problem of the field at path.
func (d *decoder) errf(path, format string, args ...any) {
	if d.reported(path) {
		return
	}
	d.add(d.line(path), path, format, args...)
}

func (d *decoder) at(n *yaml.Node, path string) {
	if _, ok := d.lines[path]; !ok {
		d.lines[path] = n.Line
	}
}

func field(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

func isNull(n *yaml.Node) bool { return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" }

func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	}
	return fmt.Sprintf("%q", n.Value)
}

// scalar checks that n is one value (not a list or mapping).
func (d *decoder) scalar(n *yaml.Node, path, want string) bool {
	if n.Kind != yaml.ScalarNode {
		d.add(n.Line, path, "want %s, got %s", want, describe(n))
		return false
	}
	return true
}

// value decodes n into v (settable) at path.
func (d *decoder) value(n *yaml.Node, v reflect.Value, path string) {
	d.at(n, path)
	if n.Kind == yaml.AliasNode {
		d.add(n.Line, path, "anchors and aliases are not supported: write the value out")
		return
	}
	if nd, ok := v.Addr().Interface().(nodeDecoder); ok {
		if !isNull(n) {
			nd.decodeNode(d, n, path)
		}
		return
	}
	switch v.Kind() {
	case reflect.String:
		if isNull(n) || !d.scalar(n, path, "text") {
			return
		}
		v.SetString(n.Value)
	case reflect.Bool:
		var b bool
		if isNull(n) || !d.scalar(n, path, "true or false") {
			return
		}
		if n.Decode(&b) != nil {
			d.add(n.Line, path, "want true or false, got %q", n.Value)
			return
		}
		v.SetBool(b)
	case reflect.Int:
		var i int
		if isNull(n) || !d.scalar(n, path, "a whole number") {
			return
		}
		if n.Decode(&i) != nil {
			d.add(n.Line, path, "want a whole number, got %q", n.Value)
			return
		}
		v.SetInt(int64(i))
	case reflect.Float64:
		var f float64
		if isNull(n) || !d.scalar(n, path, "a number") {
			return
		}
		if n.Decode(&f) != nil || math.IsNaN(f) || math.IsInf(f, 0) {
			d.add(n.Line, path, "want a number, got %q", n.Value)
			return
		}
		v.SetFloat(f)
	case reflect.Pointer:
		if isNull(n) {
			return
		}
		p := reflect.New(v.Type().Elem())
		d.value(n, p.Elem(), path)
		v.Set(p)
	case reflect.Slice:
		if isNull(n) {
			return
		}
		if n.Kind != yaml.SequenceNode {
			d.add(n.Line, path, "want a list, got %s", describe(n))
			return
		}
		if len(n.Content) == 0 {
			return // an empty list is no list: the same Exercise as none written
		}
		s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, item := range n.Content {
			d.value(item, s.Index(i), fmt.Sprintf("%s[%d]", path, i))
		}
		v.Set(s)
	case reflect.Map: // map[string]string: text keys to text values
		if isNull(n) {
			return
		}
		pairs, ok := d.pairs(n, path)
		if !ok || len(pairs) == 0 {
			return
		}
		m := make(map[string]string, len(pairs))
		for _, p := range pairs {
			fp := field(path, p.key.Value)
			d.lines[fp] = p.key.Line
			var s string
			d.value(p.val, reflect.ValueOf(&s).Elem(), fp)
			m[p.key.Value] = s
		}
		v.Set(reflect.ValueOf(m))
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			if !isNull(n) {
				d.add(n.Line, path, "want a mapping of fields, got %s", describe(n))
			}
			return
		}
		if pairs, ok := d.pairs(n, path); ok {
			d.fields(pairs, v, path, "", nil)
		}
	default:
		panic(fmt.Sprintf("exercises: cannot decode into %s", v.Type())) // a bug of this package's types
	}
}

type pair struct{ key, val *yaml.Node }

// pairs lists a mapping's key/value pairs, refusing a key that is not text or that is
// given twice (yaml.v3's Node API keeps both).
func (d *decoder) pairs(n *yaml.Node, path string) ([]pair, bool) {
	if n.Kind != yaml.MappingNode {
		d.add(n.Line, path, "want a mapping, got %s", describe(n))
		return nil, false
	}
	seen := map[string]bool{}
	var out []pair
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode || k.Value == "" {
			d.add(k.Line, path, "want a field name, got %s", describe(k))
			continue
		}
		if seen[k.Value] {
			d.add(k.Line, field(path, k.Value), "given twice")
			continue
		}
		seen[k.Value] = true
		out = append(out, pair{k, v})
	}
	return out, true
}

// yamlName is a struct field's name in YAML ("" for fields YAML does not see).
func yamlName(f reflect.StructField) string {
	name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
	if name == "-" || !f.IsExported() {
		return ""
	}
	if name == "" {
		return strings.ToLower(f.Name)
	}
	return name
}

func fieldNames(t reflect.Type) []string {
	var out []string
	for i := range t.NumField() {
		if name := yamlName(t.Field(i)); name != "" {
			out = append(out, name)
		}
	}
	return out
}

// fields decodes a mapping's pairs into struct v, field by field. A field it does not know is
// an error listing the ones it does (plus also, the fields the caller decodes itself,
// which skip names); what says which kind of mapping this is, for that message.
func (d *decoder) fields(pairs []pair, v reflect.Value, path, what string, also []string) {
	t := v.Type()
	byName := map[string]int{}
	for i := range t.NumField() {
		if name := yamlName(t.Field(i)); name != "" {
			byName[name] = i
		}
	}
	for _, p := range pairs {
		fp := field(path, p.key.Value)
		if slices.Contains(also, p.key.Value) {
			continue
		}
		i, ok := byName[p.key.Value]
		if !ok {
			known := append(fieldNames(t), also...)
			d.add(p.key.Line, fp, "unknown field%s (fields: %s)", what, strings.Join(known, ", "))
			continue
		}
		d.lines[fp] = p.key.Line
		d.value(p.val, v.Field(i), fp)
	}
}

// decodeNode reads a duration written as text.
func (x *Duration) decodeNode(d *decoder, n *yaml.Node, path string) {
	if !d.scalar(n, path, "a duration like 30s") {
		return
	}
	v, err := parseDuration(n.Value)
	if err != nil {
		d.add(n.Line, path, "%v", err)
		return
	}
	*x = v
}

// decodeNode reads a mapping of setting keys to values, in order. A value may be written
// as YAML reads it (true, 15s, 5): it is taken as the text it was written as.
func (s *Settings) decodeNode(d *decoder, n *yaml.Node, path string) {
	pairs, ok := d.pairs(n, path)
	if !ok {
		return
	}
	for _, p := range pairs {
		fp := field(path, p.key.Value)
		d.lines[fp] = p.key.Line
		if p.val.Kind == yaml.AliasNode {
			d.add(p.val.Line, fp, "anchors and aliases are not supported: write the value out")
			continue
		}
		if isNull(p.val) || !d.scalar(p.val, fp, "a value") {
			if isNull(p.val) {
				d.add(p.val.Line, fp, "missing value")
			}
			continue
		}
		*s = append(*s, Setting{Key: p.key.Value, Value: p.val.Value})
	}
}

// kindFields is where the fields of each check kind go.
func kindFields(c *Check, kind string) (reflect.Value, bool) {
	var p any
	switch kind {
	case KindEvent:
		c.Event = &EventCheck{}
		p = c.Event
	case KindSaga:
		c.Saga = &SagaCheck{}
		p = c.Saga
	case KindSpan:
		c.Span = &SpanCheck{}
		p = c.Span
	case KindPromQL:
		c.PromQL = &PromQLCheck{}
		p = c.PromQL
	case KindSetting:
		c.Setting = &SettingCheck{}
		p = c.Setting
	case KindFault:
		c.Fault = &FaultCheck{}
		p = c.Fault
	case KindOrder:
		c.Order = &OrderCheck{}
		p = c.Order
	case KindLedger:
		c.Ledger = &LedgerCheck{}
		p = c.Ledger
	case KindAnswer:
		c.Answer = &AnswerCheck{}
		p = c.Answer
	default:
		return reflect.Value{}, false
	}
	return reflect.ValueOf(p).Elem(), true
}

// decodeNode reads a check: one mapping of kind, within, and the kind's own fields.
func (c *Check) decodeNode(d *decoder, n *yaml.Node, path string) {
	pairs, ok := d.pairs(n, path)
	if !ok {
		return
	}
	var kindNode, withinNode, checksNode *yaml.Node
	for _, p := range pairs {
		switch p.key.Value {
		case "kind":
			kindNode = p.val
		case "within":
			withinNode = p.val
		case "checks":
			checksNode = p.val
		default:
			continue
		}
		d.lines[field(path, p.key.Value)] = p.key.Line
	}
	kp := field(path, "kind")
	if kindNode == nil {
		d.errf(kp, "missing: say what to check (kinds: %s)", strings.Join(Kinds, ", "))
		return
	}
	if !d.scalar(kindNode, kp, "a check kind") {
		return
	}
	c.Kind = kindNode.Value
	if !slices.Contains(Kinds, c.Kind) {
		d.errf(kp, "unknown check kind %q (kinds: %s)", c.Kind, strings.Join(Kinds, ", "))
		return
	}
	if withinNode != nil {
		d.value(withinNode, reflect.ValueOf(&c.Within).Elem(), field(path, "within"))
	}
	what := " for a check of kind " + c.Kind
	if c.Kind == KindAll || c.Kind == KindAny {
		for _, p := range pairs {
			if name := p.key.Value; name != "kind" && name != "within" && name != "checks" {
				d.add(p.key.Line, field(path, name), "unknown field%s (fields: kind, checks, within)", what)
			}
		}
		if checksNode != nil {
			d.value(checksNode, reflect.ValueOf(&c.Checks).Elem(), field(path, "checks"))
		}
		return
	}
	v, _ := kindFields(c, c.Kind)
	d.fields(pairs, v, path, what, []string{"kind", "within"})
}
