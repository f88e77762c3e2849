package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestProbe(t *testing.T) {
	ok := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/readyz" {
			w.WriteHeader(http.StatusOK)
			return
		}
		http.Error(w, "not ready", http.StatusServiceUnavailable)
	}))
	defer ok.Close()
	closed := httptest.NewServer(http.NotFoundHandler())
	closed.Close()

	for _, tc := range []struct {
		args []string
		want string // "" = healthy
	}{
		{[]string{ok.URL + "/readyz"}, ""},
		{[]string{ok.URL + "/other"}, "503"},
		{[]string{closed.URL}, "connect"},
		{nil, "usage"},
		{[]string{"a", "b"}, "usage"},
	} {
		err := run(context.Background(), tc.args)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%v: %v, want healthy", tc.args, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%v: %v, want an error with %q", tc.args, err, tc.want)
		}
	}
}
