// Package dashboard serves the analytics_query extension's built-in page: one
// HTML page, its script and stylesheet, and the vendored uPlot chart library
// (see VENDORED.md), all embedded in the binary. The page reads the extension's
// query API from the same origin and refreshes itself.
package dashboard

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"time"
)

//go:embed static
var static embed.FS

// AssetsPrefix is the path under which the page's script, stylesheet and the
// vendored chart library are served; the page refers to them relatively.
const AssetsPrefix = "/assets/"

// contentSecurityPolicy allows only the collector's own origin: the page loads
// nothing from elsewhere. uPlot sizes its elements with inline styles.
const contentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; " +
	"connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

// asset is one embedded file, ready to serve.
type asset struct {
	body        []byte
	contentType string
	etag        string
}

// handler serves the page at "/" and the assets under AssetsPrefix; any other
// path is a 404.
type handler struct {
	index  asset
	assets map[string]asset // by path below AssetsPrefix, e.g. "uplot/uPlot.min.css"
}

// Handler returns the dashboard's handler. Mount it at the root of the
// server that also serves the query API (/api/v2/...): the page calls the
// API with paths relative to itself.
func Handler() http.Handler {
	h := &handler{assets: map[string]asset{}}
	// The embedded tree is fixed at build time: a walk error cannot happen.
	_ = fs.WalkDir(static, "static", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		body, err := static.ReadFile(p)
		if err != nil {
			return err
		}
		name := strings.TrimPrefix(p, "static/")
		a := newAsset(name, body)
		if name == "index.html" {
			h.index = a
			return nil
		}
		h.assets[name] = a
		return nil
	})
	return h
}

// contentTypes is fixed here rather than read from the system's MIME
// tables, which differ between machines (.js as application/javascript).
var contentTypes = map[string]string{
	".html": "text/html; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".css":  "text/css; charset=utf-8",
	"":      "text/plain; charset=utf-8", // LICENSE
}

func newAsset(name string, body []byte) asset {
	ct, ok := contentTypes[path.Ext(name)]
	if !ok {
		ct = "application/octet-stream"
	}
	sum := sha256.Sum256(body)
	return asset{body: body, contentType: ct, etag: `"` + hex.EncodeToString(sum[:8]) + `"`}
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var a asset
	switch name, isAsset := strings.CutPrefix(r.URL.Path, AssetsPrefix); {
	case r.URL.Path == "/" || r.URL.Path == "/index.html":
		a = h.index
		w.Header().Set("Content-Security-Policy", contentSecurityPolicy)
		w.Header().Set("Referrer-Policy", "no-referrer")
	case isAsset:
		var ok bool
		if a, ok = h.assets[name]; !ok {
			http.NotFound(w, r)
			return
		}
	default:
		http.NotFound(w, r)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, http.StatusText(http.StatusMethodNotAllowed), http.StatusMethodNotAllowed)
		return
	}
	w.Header().Set("Content-Type", a.contentType)
	w.Header().Set("X-Content-Type-Options", "nosniff")
	// Revalidate every time (the ETag makes that a 304): a new collector
	// version serves its own page at once.
	w.Header().Set("Cache-Control", "no-cache")
	w.Header().Set("ETag", a.etag)
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(a.body))
}
