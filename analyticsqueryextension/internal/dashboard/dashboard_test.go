package dashboard

import (
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func get(t *testing.T, h http.Handler, method, target string, header http.Header) *http.Response {
	t.Helper()
	req := httptest.NewRequestWithContext(t.Context(), method, target, http.NoBody)
	maps.Copy(req.Header, header)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec.Result()
}

func TestHandlerServes(t *testing.T) {
	t.Parallel()
	h := Handler()
	tests := []struct {
		path        string
		contentType string
		contains    string
		file        string // the embedded file whose bytes must be served
	}{
		{"/", "text/html; charset=utf-8", `<script src="assets/dashboard.js"`, "static/index.html"},
		{"/index.html", "text/html; charset=utf-8", "<title>", "static/index.html"},
		{"/assets/dashboard.js", "text/javascript; charset=utf-8", "window.dashboardState", "static/dashboard.js"},
		{"/assets/dashboard.css", "text/css; charset=utf-8", ".charts", "static/dashboard.css"},
		{"/assets/uplot/uPlot.iife.min.js", "text/javascript; charset=utf-8", "(v1.6.32)", "static/uplot/uPlot.iife.min.js"},
		{"/assets/uplot/uPlot.min.css", "text/css; charset=utf-8", ".uplot", "static/uplot/uPlot.min.css"},
		{"/assets/uplot/LICENSE", "text/plain; charset=utf-8", "MIT", "static/uplot/LICENSE"},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			t.Parallel()
			resp := get(t, h, http.MethodGet, tt.path, nil)
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			require.NoError(t, err)
			require.Equal(t, http.StatusOK, resp.StatusCode)
			assert.Equal(t, tt.contentType, resp.Header.Get("Content-Type"))
			assert.Equal(t, "nosniff", resp.Header.Get("X-Content-Type-Options"))
			assert.NotEmpty(t, resp.Header.Get("ETag"))
			assert.Contains(t, string(body), tt.contains)
			want, err := static.ReadFile(tt.file)
			require.NoError(t, err)
			assert.Equal(t, want, body)
		})
	}
}

func TestHandlerIndexPolicy(t *testing.T) {
	t.Parallel()
	resp := get(t, Handler(), http.MethodGet, "/", nil)
	defer resp.Body.Close()
	csp := resp.Header.Get("Content-Security-Policy")
	assert.Contains(t, csp, "default-src 'none'")
	assert.Contains(t, csp, "script-src 'self'")
	assert.Contains(t, csp, "connect-src 'self'")
}

func TestHandlerRejects(t *testing.T) {
	t.Parallel()
	h := Handler()
	tests := []struct {
		method, path string
		status       int
	}{
		{http.MethodGet, "/nope", http.StatusNotFound},
		{http.MethodGet, "/assets/", http.StatusNotFound},                // no directory listing
		{http.MethodGet, "/assets/uplot", http.StatusNotFound},           // nor of a subfolder
		{http.MethodGet, "/assets/missing.js", http.StatusNotFound},      // unknown asset
		{http.MethodGet, "/assets/index.html", http.StatusNotFound},      // the page lives at / only
		{http.MethodGet, "/assets/../dashboard.go", http.StatusNotFound}, // nothing outside static/
		{http.MethodGet, "/static/dashboard.js", http.StatusNotFound},    // embedded folder name is not a path
		{http.MethodPost, "/", http.StatusMethodNotAllowed},              // read-only
		{http.MethodDelete, "/assets/dashboard.js", http.StatusMethodNotAllowed},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			t.Parallel()
			resp := get(t, h, tt.method, tt.path, nil)
			defer resp.Body.Close()
			assert.Equal(t, tt.status, resp.StatusCode)
		})
	}
}

func TestHandlerHeadAndRevalidation(t *testing.T) {
	t.Parallel()
	h := Handler()
	resp := get(t, h, http.MethodHead, "/assets/dashboard.js", nil)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	etag := resp.Header.Get("ETag")
	require.NotEmpty(t, etag)

	resp2 := get(t, h, http.MethodGet, "/assets/dashboard.js", http.Header{"If-None-Match": {etag}})
	defer resp2.Body.Close()
	assert.Equal(t, http.StatusNotModified, resp2.StatusCode)
}

// TestVendoredUPlot checks that the vendored files and VENDORED.md name the
// same pinned version.
func TestVendoredUPlot(t *testing.T) {
	t.Parallel()
	js, err := static.ReadFile("static/uplot/uPlot.iife.min.js")
	require.NoError(t, err)
	first, _, _ := strings.Cut(string(js), "\n")
	require.Contains(t, first, "(v1.6.32)", "uPlot.iife.min.js is not the pinned version")
	note, err := os.ReadFile("VENDORED.md")
	require.NoError(t, err)
	assert.Contains(t, string(note), "**1.6.32**")
	script, err := os.ReadFile("vendor-uplot.sh")
	require.NoError(t, err)
	assert.Contains(t, string(script), "VERSION=${1:-1.6.32}")
}
