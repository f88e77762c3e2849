package control

import (
	"fmt"
	"slices"
	"strings"
)

// ValidateTarget checks what a clear names: "" (every fault), a service, or an instance
// of one ("payments-2"). Every face refuses a typo with this one message rather than
// clearing nothing.
func ValidateTarget(target string) error {
	if target == "" || slices.Contains(FaultServices, target) {
		return nil
	}
	for _, svc := range FaultServices {
		if rest, ok := strings.CutPrefix(target, svc+"-"); ok && rest != "" {
			return nil
		}
	}
	return fmt.Errorf("unknown target %q: want a service (%s) or one of its instances, like payments-2",
		target, strings.Join(FaultServices, ", "))
}
