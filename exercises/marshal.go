package exercises

import (
	"fmt"
	"reflect"
	"slices"
	"strconv"

	"gopkg.in/yaml.v3"
)

// Marshal writes an exercise as exercise.yaml, fields in the order of the types, zero
// values left out: what Parse reads back as the same Exercise (README aside).
func Marshal(e Exercise) ([]byte, error) {
	doc := &yaml.Node{Kind: yaml.DocumentNode, Content: []*yaml.Node{encode(reflect.ValueOf(e))}}
	out, err := yaml.Marshal(doc)
	if err != nil {
		return nil, fmt.Errorf("marshal exercise %s: %w", e.ID, err)
	}
	return out, nil
}

// nodeEncoder is implemented by the types whose YAML shape is not their Go shape.
type nodeEncoder interface{ encodeNode() *yaml.Node }

func str(s string) *yaml.Node { return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: s} }

func mapping(pairs ...*yaml.Node) *yaml.Node {
	return &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map", Content: pairs}
}

// encode is the node of v (nil for a zero value, which is left out).
func encode(v reflect.Value) *yaml.Node {
	if ne, ok := v.Interface().(nodeEncoder); ok && !v.IsZero() {
		return ne.encodeNode()
	}
	if v.IsZero() && v.Kind() != reflect.Pointer {
		return nil
	}
	switch v.Kind() {
	case reflect.String:
		return str(v.String())
	case reflect.Bool:
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!bool", Value: strconv.FormatBool(v.Bool())}
	case reflect.Int:
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!int", Value: strconv.FormatInt(v.Int(), 10)}
	case reflect.Float64:
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!float", Value: strconv.FormatFloat(v.Float(), 'g', -1, 64)}
	case reflect.Pointer:
		if v.IsNil() {
			return nil
		}
		if ne, ok := v.Elem().Interface().(nodeEncoder); ok {
			return ne.encodeNode()
		}
		if v.Elem().IsZero() { // a zero value that was written, like `traffic: {}` or `active: false`
			switch v.Elem().Kind() {
			case reflect.Struct:
				return mapping()
			case reflect.Bool:
				return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!bool", Value: "false"}
			case reflect.Int:
				return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!int", Value: "0"}
			}
		}
		return encode(v.Elem())
	case reflect.Slice:
		n := &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq"}
		for i := range v.Len() {
			item := encode(v.Index(i))
			if item == nil {
				item = zeroNode(v.Index(i))
			}
			n.Content = append(n.Content, item)
		}
		return n
	case reflect.Map:
		keys := make([]string, 0, v.Len())
		for _, k := range v.MapKeys() {
			keys = append(keys, k.String())
		}
		slices.Sort(keys)
		n := mapping()
		for _, k := range keys {
			n.Content = append(n.Content, str(k), str(v.MapIndex(reflect.ValueOf(k)).String()))
		}
		return n
	case reflect.Struct:
		n := mapping()
		t := v.Type()
		for i := range t.NumField() {
			name := yamlName(t.Field(i))
			if name == "" {
				continue
			}
			if item := encode(v.Field(i)); item != nil {
				n.Content = append(n.Content, str(name), item)
			}
		}
		return n
	}
	panic(fmt.Sprintf("exercises: cannot encode %s", v.Type())) // a bug of this package's types
}

// zeroNode is a list item that is a zero value: an empty text, or an empty mapping.
func zeroNode(v reflect.Value) *yaml.Node {
	if v.Kind() == reflect.Struct {
		return mapping()
	}
	return str("")
}

func (d Duration) encodeNode() *yaml.Node { return str(d.D.String()) }

func (s Settings) encodeNode() *yaml.Node {
	n := mapping()
	for _, kv := range s {
		n.Content = append(n.Content, str(kv.Key), str(kv.Value))
	}
	return n
}

func (c Check) encodeNode() *yaml.Node {
	n := mapping(str("kind"), str(c.Kind))
	var body *yaml.Node
	switch {
	case c.Kind == KindAll || c.Kind == KindAny:
		if items := encode(reflect.ValueOf(c.Checks)); items != nil {
			body = mapping(str("checks"), items)
		}
	default:
		if v, ok := c.kindValue(); ok {
			body = encode(v)
		}
	}
	if body != nil {
		n.Content = append(n.Content, body.Content...)
	}
	if c.Within.D != 0 {
		n.Content = append(n.Content, str("within"), c.Within.encodeNode())
	}
	return n
}

// kindValue is the struct of the check's kind.
func (c Check) kindValue() (reflect.Value, bool) {
	for _, p := range []any{c.Event, c.Saga, c.Span, c.PromQL, c.Setting, c.Fault, c.Order, c.Ledger, c.Answer} {
		if v := reflect.ValueOf(p); !v.IsNil() {
			return v.Elem(), true
		}
	}
	return reflect.Value{}, false
}

// encodeNode always writes on, so `traffic: {on: false}` reads as what it means.
func (t Traffic) encodeNode() *yaml.Node {
	n := mapping(str("on"), encodeBool(t.On))
	if t.Rate != 0 {
		n.Content = append(n.Content, str("rate"), encode(reflect.ValueOf(t.Rate)))
	}
	if t.Mix != "" {
		n.Content = append(n.Content, str("mix"), str(t.Mix))
	}
	if t.Browse != 0 {
		n.Content = append(n.Content, str("browse"), encode(reflect.ValueOf(t.Browse)))
	}
	return n
}

func encodeBool(b bool) *yaml.Node {
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!bool", Value: strconv.FormatBool(b)}
}
