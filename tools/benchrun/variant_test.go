package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestVariantFlag(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "ft50.yaml")
	require.NoError(t, os.WriteFile(cfg, []byte("receivers: {}\n"), 0o600))

	tests := []struct {
		name    string
		args    []string
		wantErr string
		wantKey []string
	}{
		{name: "one", args: []string{"ft50=" + cfg}, wantKey: []string{"variant-ft50"}},
		{name: "two", args: []string{"a=" + cfg, "b-2=" + cfg}, wantKey: []string{"variant-a", "variant-b-2"}},
		{name: "no path", args: []string{"ft50"}, wantErr: "want name=path"},
		{name: "empty path", args: []string{"ft50="}, wantErr: "want name=path"},
		{name: "upper case", args: []string{"FT=" + cfg}, wantErr: "want name=path"},
		{name: "leading dash", args: []string{"-x=" + cfg}, wantErr: "want name=path"},
		{name: "missing file", args: []string{"x=" + cfg + ".missing"}, wantErr: "no such file"},
		{name: "twice", args: []string{"x=" + cfg, "x=" + cfg}, wantErr: "given twice"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var v variantFlag
			var err error
			for _, a := range tt.args {
				if err = v.Set(a); err != nil {
					break
				}
			}
			if tt.wantErr != "" {
				require.ErrorContains(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
			var keys []string
			for _, c := range v.configs() {
				keys = append(keys, c.key)
				assert.True(t, c.analytics, "a variant's counts are checked")
				assert.Equal(t, cfg, c.file)
			}
			assert.Equal(t, tt.wantKey, keys)
		})
	}
}
