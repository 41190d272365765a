// schemacheck validates Grafana dashboard JSON files against Grafana's own schema, as generated into the
// grafana-foundation-sdk: Dashboard.UnmarshalJSONStrict fails on unknown fields, wrong types and missing required
// fields, for the dashboard and (with the default plugins registered) for each panel type's options and field config.
//
// Usage: schemacheck FILE...   Prints "ok FILE" or "FAIL FILE: error" per file; exits 1 if any failed.
package main

import (
	"fmt"
	"os"

	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/cog/plugins"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
)

func check(path string) error {
	raw, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var d dashboard.Dashboard
	err = d.UnmarshalJSONStrict(raw)
	// v0.0.22 returns its error list as an `error` even when the list is empty (a non-nil interface holding a nil
	// slice), so "no errors" is an empty cog.BuildErrors, not nil.
	if errs, ok := err.(cog.BuildErrors); ok && len(errs) == 0 {
		return nil
	}
	return err
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: schemacheck FILE...")
		os.Exit(2)
	}
	// Without the panel and query plugins, a panel's options would be accepted as any JSON at all.
	plugins.RegisterDefaultPlugins()
	failed := false
	for _, path := range os.Args[1:] {
		if err := check(path); err != nil {
			failed = true
			fmt.Printf("FAIL %s: %v\n", path, err)
		} else {
			fmt.Printf("ok %s\n", path)
		}
	}
	if failed {
		os.Exit(1)
	}
}
