package main

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"math"
	"strings"
)

// renderSVG draws latency.svg: one panel per scenario that measured
// latency, each with one line (a <path> with data-target and
// data-scenario attributes) per target. The x axis is the percentile on
// the usual log scale of -log10(1 - p) — 0, 90, 99, 99.9, 99.99 evenly
// spaced — so the tail gets the room it deserves; the y axis is latency on
// a log scale, since one target's tail can be 100× another's median.
func renderSVG(r *Report) string {
	var panels []*ScenarioReport
	for _, s := range r.Scenarios {
		if s.Skipped == "" && s.Mode != "idle" && hasCurve(s) {
			panels = append(panels, s)
		}
	}
	const (
		pw, ph         = 480, 300 // panel size
		ml, mr, mt, mb = 64, 16, 34, 44
		cols           = 2
		headerH        = 56
	)
	rows := (len(panels) + cols - 1) / cols
	if rows == 0 {
		rows = 1
	}
	width, height := cols*pw, headerH+rows*ph
	var b bytes.Buffer
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	w(`<?xml version="1.0" encoding="UTF-8"?>` + "\n")
	w(`<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="11">`+"\n", width, height, width, height)
	w(`<rect width="100%%" height="100%%" fill="white"/>` + "\n")
	w(`<text x="10" y="22" font-size="15" font-weight="bold">%s</text>`+"\n", esc("Keystone bench: latency by percentile (medians over repetitions; log scales)"))
	for i, t := range []string{"keystone", "nginx", "haproxy"} {
		x := 10 + i*110
		w(`<line x1="%d" y1="40" x2="%d" y2="40" stroke="%s" stroke-width="2.5"/><text x="%d" y="44">%s</text>`+"\n", x, x+24, color(t), x+30, esc(targetTitle(t)))
	}
	if len(panels) == 0 {
		w(`<text x="10" y="70">%s</text>`+"\n", esc("no latency measured"))
	}
	for i, s := range panels {
		ox, oy := (i%cols)*pw, headerH+(i/cols)*ph
		iw, ih := float64(pw-ml-mr), float64(ph-mt-mb)
		lo, hi := yRange(s)
		xpos := func(p float64) float64 {
			x := -math.Log10(1 - p/100)
			if math.IsInf(x, 1) || x > 4 {
				x = 4
			}
			return float64(ml) + x/4*iw
		}
		ypos := func(v float64) float64 {
			v = math.Max(v, math.Pow(10, lo))
			return float64(mt) + ih - (math.Log10(v)-lo)/(hi-lo)*ih
		}
		w(`<g transform="translate(%d,%d)" data-scenario="%s">`+"\n", ox, oy, esc(s.Name))
		w(`<text x="%d" y="20" font-size="13" font-weight="bold">%s</text>`+"\n", ml, esc(panelTitle(s)))
		w(`<rect x="%d" y="%d" width="%.0f" height="%.0f" fill="none" stroke="#999"/>`+"\n", ml, mt, iw, ih)
		for k, label := range []string{"0", "90", "99", "99.9", "99.99"} {
			x := float64(ml) + float64(k)/4*iw
			w(`<line x1="%.1f" y1="%d" x2="%.1f" y2="%.1f" stroke="#ddd"/>`, x, mt, x, float64(mt)+ih)
			w(`<text x="%.1f" y="%.1f" text-anchor="middle">%s</text>`+"\n", x, float64(mt)+ih+14, label)
		}
		w(`<text x="%.1f" y="%d" text-anchor="middle">percentile</text>`+"\n", float64(ml)+iw/2, ph-8)
		for d := lo; d <= hi+1e-9; d++ {
			y := ypos(math.Pow(10, d))
			w(`<line x1="%d" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#ddd"/>`, ml, y, float64(ml)+iw, y)
			w(`<text x="%d" y="%.1f" text-anchor="end">%s</text>`+"\n", ml-4, y+4, esc(decade(d)))
		}
		w(`<text transform="translate(14,%.1f) rotate(-90)" text-anchor="middle">latency</text>`+"\n", float64(mt)+ih/2)
		for _, x := range s.Summary {
			if len(x.Curve) == 0 {
				continue
			}
			var d strings.Builder
			for j, pt := range x.Curve {
				cmd := "L"
				if j == 0 {
					cmd = "M"
				}
				fmt.Fprintf(&d, "%s%.1f %.1f ", cmd, xpos(pt[0]), ypos(pt[1]))
			}
			w(`<path d="%s" fill="none" stroke="%s" stroke-width="2" data-target="%s" data-scenario="%s"><title>%s</title></path>`+"\n",
				strings.TrimSpace(d.String()), color(x.Target), esc(x.Target), esc(s.Name), esc(targetTitle(x.Target)+": "+s.Name))
		}
		w("</g>\n")
	}
	w("</svg>\n")
	return b.String()
}

// decade labels 10^d microseconds: 10µs, 100µs, 1ms, ... 10s.
func decade(d float64) string {
	units := []string{"µs", "ms", "s"}
	e := int(math.Round(d))
	if e < 0 {
		return fmt.Sprintf("%gµs", math.Pow(10, d))
	}
	u := min(e/3, len(units)-1)
	return fmt.Sprintf("%.0f%s", math.Pow(10, float64(e-3*u)), units[u])
}

func hasCurve(s *ScenarioReport) bool {
	for _, x := range s.Summary {
		if len(x.Curve) > 0 {
			return true
		}
	}
	return false
}

func panelTitle(s *ScenarioReport) string {
	t := fmt.Sprintf("%s — %s loop, %d conns", s.Name, s.Mode, s.Connections)
	if s.Rate > 0 {
		t += fmt.Sprintf(", %.0f req/s", s.Rate)
	}
	return t
}

// yRange is the panel's y extent in log10(µs), whole decades around every
// plotted value.
func yRange(s *ScenarioReport) (lo, hi float64) {
	lo, hi = math.Inf(1), math.Inf(-1)
	for _, x := range s.Summary {
		for _, pt := range x.Curve {
			if pt[1] > 0 {
				lo = math.Min(lo, math.Log10(pt[1]))
				hi = math.Max(hi, math.Log10(pt[1]))
			}
		}
	}
	if math.IsInf(lo, 1) {
		return 1, 3
	}
	lo, hi = math.Floor(lo), math.Ceil(hi)
	if hi <= lo {
		hi = lo + 1
	}
	return lo, hi
}

// color is a target's line colour (colour-blind-safe Okabe-Ito hues).
func color(t string) string {
	switch t {
	case "keystone":
		return "#D55E00"
	case "nginx":
		return "#009E73"
	case "haproxy":
		return "#0072B2"
	}
	return "#000000"
}

// esc escapes text for SVG/XML content and attribute values.
func esc(s string) string {
	var b strings.Builder
	xml.EscapeText(&b, []byte(s))
	return b.String()
}
