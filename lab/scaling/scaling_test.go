package scaling

import (
	"testing"

	"microlab/lab/stack"
	"microlab/services/platform/control"
)

// The control plane bounds scale.<service> without importing lab (the services never
// do): its bound must be lab up's.
func TestBoundsAgree(t *testing.T) {
	if control.MaxScale != stack.MaxScale {
		t.Fatalf("control.MaxScale = %d, stack.MaxScale = %d: the scale settings would accept what lab up refuses, or refuse what it runs",
			control.MaxScale, stack.MaxScale)
	}
	for _, svc := range control.ScaleServices {
		if _, ok := stack.Find(svc); !ok {
			t.Errorf("scale.%s: no service %s in lab/stack", svc, svc)
		}
		if _, err := (stack.Config{}).Instances(map[string]int{svc: control.MaxScale}); err != nil {
			t.Errorf("scale.%s=%d: lab up refuses it: %v", svc, control.MaxScale, err)
		}
	}
}
