/* The SVG plot (see report.h): hand-written SVG text, no dependencies. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "loadgen/report.h"

#define PANEL_W  400
#define PANEL_H  320
#define MARGIN_L 64
#define MARGIN_R 16
#define MARGIN_T 36
#define MARGIN_B 48

static const char *const palette[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd",
                                      "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};

static void xml_text(FILE *f, const char *s) {
    for (; *s; s++) {
        switch (*s) {
        case '<':
            fputs("&lt;", f);
            break;
        case '>':
            fputs("&gt;", f);
            break;
        case '&':
            fputs("&amp;", f);
            break;
        case '"':
            fputs("&quot;", f);
            break;
        default:
            fputc(*s, f);
        }
    }
}

/* A "nice" tick step (1, 2 or 5 times a power of ten) giving about 5 ticks up to hi. */
static double nice_step(double hi) {
    if (!(hi > 0))
        return 1;
    double raw = hi / 5.0;
    double p = pow(10.0, floor(log10(raw)));
    double m = raw / p;
    double s = m <= 1 ? 1 : m <= 2 ? 2 : m <= 5 ? 5 : 10;
    return s * p;
}

typedef struct panel {
    double x0, y0;     // top-left corner of the panel in the SVG
    double xmax, ymax; // data ranges (from 0)
    double pw, ph;     // plot area size
} panel;

static double px(const panel *p, double x) {
    return p->x0 + MARGIN_L + x / p->xmax * p->pw;
}
static double py(const panel *p, double y) {
    return p->y0 + MARGIN_T + p->ph - y / p->ymax * p->ph;
}

static void fmt_tick(char *buf, size_t n, double v) {
    if (v != 0 && (fabs(v) >= 1e5 || fabs(v) < 1e-2))
        snprintf(buf, n, "%.0e", v);
    else
        snprintf(buf, n, "%g", v);
}

/* Frame, ticks, grid and titles; rounds xmax/ymax up to a tick. */
static void axes(FILE *f, panel *p, const char *title, const char *xlabel, const char *ylabel,
                 bool y_unit) {
    p->pw = PANEL_W - MARGIN_L - MARGIN_R;
    p->ph = PANEL_H - MARGIN_T - MARGIN_B;
    double xs = nice_step(p->xmax);
    p->xmax = ceil(p->xmax / xs) * xs;
    if (!(p->xmax > 0))
        p->xmax = xs;
    double ys = y_unit ? 0.25 : nice_step(p->ymax);
    if (!y_unit) {
        p->ymax = ceil(p->ymax / ys) * ys;
        if (!(p->ymax > 0))
            p->ymax = ys;
    }
    fprintf(f, "<g font-family=\"sans-serif\" font-size=\"11\">\n");
    fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"13\" text-anchor=\"middle\">",
            p->x0 + MARGIN_L + p->pw / 2, p->y0 + 20);
    xml_text(f, title);
    fputs("</text>\n", f);
    char t[32];
    for (double x = 0; x <= p->xmax * 1.0000001; x += xs) {
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>\n",
                px(p, x), py(p, 0), px(p, x), py(p, p->ymax));
        fmt_tick(t, sizeof t, x);
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%s</text>\n", px(p, x),
                py(p, 0) + 14, t);
    }
    for (double y = 0; y <= p->ymax * 1.0000001; y += ys) {
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>\n",
                px(p, 0), py(p, y), px(p, p->xmax), py(p, y));
        fmt_tick(t, sizeof t, y);
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%s</text>\n", px(p, 0) - 4,
                py(p, y) + 4, t);
    }
    fprintf(f,
            "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"none\" "
            "stroke=\"#333\"/>\n",
            px(p, 0), py(p, p->ymax), p->pw, p->ph);
    fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">", p->x0 + MARGIN_L + p->pw / 2,
            p->y0 + PANEL_H - 12);
    xml_text(f, xlabel);
    fputs("</text>\n", f);
    double yc = p->y0 + MARGIN_T + p->ph / 2;
    fprintf(f,
            "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" transform=\"rotate(-90 %.1f "
            "%.1f)\">",
            p->x0 + 16, yc, p->x0 + 16, yc);
    xml_text(f, ylabel);
    fputs("</text>\n</g>\n", f);
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The empirical CDF of v[n] as a step polyline. */
static bool cdf_line(FILE *f, const panel *p, const double *v, size_t n, const char *color) {
    if (!n)
        return true;
    double *s = malloc(n * sizeof *s);
    if (!s)
        return false;
    memcpy(s, v, n * sizeof *s);
    qsort(s, n, sizeof *s, cmp_d);
    fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"1.5\" points=\"", color);
    // At most ~800 vertices: thin long inputs evenly.
    size_t stride = n > 400 ? n / 400 : 1;
    fprintf(f, "%.1f,%.1f ", px(p, SP_MIN(s[0], p->xmax)), py(p, 0));
    for (size_t i = 0; i < n; i += stride) {
        double x = px(p, SP_MIN(s[i], p->xmax));
        fprintf(f, "%.1f,%.1f %.1f,%.1f ", x, py(p, (double)i / (double)n), x,
                py(p, (double)(i + 1) / (double)n));
    }
    fprintf(f, "%.1f,%.1f\"/>\n", px(p, SP_MIN(s[n - 1], p->xmax)), py(p, 1.0));
    free(s);
    return true;
}

static double vmax(const double *v, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++)
        m = SP_MAX(m, v[i]);
    return m;
}

static void legend(FILE *f, const panel *p, const sp_lg_plot_run *runs, int n_runs) {
    for (int i = 0; i < n_runs && i < 10; i++) {
        // Bottom right: under a CDF curve that corner stays empty.
        double y = p->y0 + MARGIN_T + p->ph - 8 - 14 * (SP_MIN(n_runs, 10) - 1 - i);
        double x = p->x0 + MARGIN_L + p->pw - 110;
        fprintf(f,
                "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" "
                "stroke-width=\"2\"/>",
                x, y - 4, x + 16, y - 4, palette[i % 10]);
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" font-family=\"sans-serif\" font-size=\"11\">",
                x + 20, y);
        xml_text(f, runs[i].label ? runs[i].label : "");
        fputs("</text>\n", f);
    }
}

typedef struct series {
    const char *name;
    double (*get)(const sp_lg_metrics *m);
    const char *dash;
} series;

static double get_med_ttft(const sp_lg_metrics *m) {
    return m->ttft_ms.median;
}
static double get_p99_ttft(const sp_lg_metrics *m) {
    return m->ttft_ms.n_pcts ? m->ttft_ms.pct_val[m->ttft_ms.n_pcts - 1] : m->ttft_ms.max;
}
static double get_mean_tpot(const sp_lg_metrics *m) {
    return m->tpot_ms.mean;
}
static double get_p99_tpot(const sp_lg_metrics *m) {
    return m->tpot_ms.n_pcts ? m->tpot_ms.pct_val[m->tpot_ms.n_pcts - 1] : m->tpot_ms.max;
}
static double get_med_e2el(const sp_lg_metrics *m) {
    return m->e2el_ms.median;
}
static double get_p99_e2el(const sp_lg_metrics *m) {
    return m->e2el_ms.n_pcts ? m->e2el_ms.pct_val[m->e2el_ms.n_pcts - 1] : m->e2el_ms.max;
}

/* Output token throughput against a pair of latency series, one point per run. */
static void tput_panel(FILE *f, panel *p, const sp_lg_plot_run *runs, int n_runs, const char *title,
                       const series *ss, int n_ss, const char *ylabel) {
    p->xmax = 0;
    p->ymax = 0;
    for (int i = 0; i < n_runs; i++) {
        p->xmax = SP_MAX(p->xmax, runs[i].m->output_throughput);
        for (int k = 0; k < n_ss; k++)
            p->ymax = SP_MAX(p->ymax, ss[k].get(runs[i].m));
    }
    axes(f, p, title, "output throughput (tok/s)", ylabel, false);
    for (int k = 0; k < n_ss; k++) {
        const char *color = palette[k];
        fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"1.5\"%s points=\"", color,
                ss[k].dash);
        for (int i = 0; i < n_runs; i++)
            fprintf(f, "%.1f,%.1f ", px(p, runs[i].m->output_throughput),
                    py(p, ss[k].get(runs[i].m)));
        fputs("\"/>\n", f);
        for (int i = 0; i < n_runs; i++) {
            fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"%s\"><title>",
                    px(p, runs[i].m->output_throughput), py(p, ss[k].get(runs[i].m)), color);
            xml_text(f, runs[i].label ? runs[i].label : "");
            fputs("</title></circle>\n", f);
        }
        double y = p->y0 + MARGIN_T + 12 + 14 * k;
        double x = p->x0 + MARGIN_L + 8;
        fprintf(f,
                "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" "
                "stroke-width=\"2\"%s/><text x=\"%.1f\" y=\"%.1f\" font-family=\"sans-serif\" "
                "font-size=\"11\">%s</text>\n",
                x, y - 4, x + 16, y - 4, color, ss[k].dash, x + 20, y, ss[k].name);
    }
    // Label each point of the upper series with its rate ("rate R" labels shortened to R).
    for (int i = 0; i < n_runs; i++) {
        const char *l = runs[i].label ? runs[i].label : "";
        const char *r = strstr(l, "rate ");
        double x = px(p, runs[i].m->output_throughput);
        bool right = x > p->x0 + MARGIN_L + 0.8 * p->pw;
        fprintf(f,
                "<text x=\"%.1f\" y=\"%.1f\" font-family=\"sans-serif\" font-size=\"9\" "
                "fill=\"#555\" text-anchor=\"%s\">",
                right ? x - 4 : x + 4, py(p, ss[n_ss - 1].get(runs[i].m)) - 6,
                right ? "end" : "start");
        xml_text(f, r ? r + 5 : l);
        fputs("</text>\n", f);
    }
}

sp_err sp_lg_plot_svg(const char *path, const sp_lg_plot_run *runs, int n_runs, const char *title) {
    FILE *f = fopen(path, "w");
    if (!f)
        return SP_ERR_IO;
    bool sweep = n_runs >= 2;
    int w = 3 * PANEL_W, h = 30 + PANEL_H * (sweep ? 2 : 1);
    fprintf(f,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
            "viewBox=\"0 0 %d %d\">\n<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n",
            w, h, w, h);
    fprintf(f,
            "<text x=\"%d\" y=\"20\" font-family=\"sans-serif\" font-size=\"15\" "
            "text-anchor=\"middle\">",
            w / 2);
    xml_text(f, title ? title : "spindle-bench");
    fputs("</text>\n", f);
    bool ok = true;
    const char *names[3] = {"TTFT CDF", "TPOT CDF", "E2EL CDF"};
    const char *xl[3] = {"time to first token (ms)", "time per output token (ms)",
                         "end-to-end latency (ms)"};
    for (int k = 0; k < 3 && ok; k++) {
        panel p = {.x0 = k * PANEL_W, .y0 = 30, .ymax = 1.0};
        for (int i = 0; i < n_runs; i++) {
            const double *v = k == 0 ? runs[i].ttft_ms : k == 1 ? runs[i].tpot_ms : runs[i].e2el_ms;
            size_t n = k == 0 ? runs[i].n_ttft : k == 1 ? runs[i].n_tpot : runs[i].n_e2el;
            p.xmax = SP_MAX(p.xmax, vmax(v, n));
        }
        axes(f, &p, names[k], xl[k], "fraction of requests", true);
        for (int i = 0; i < n_runs && ok; i++) {
            const double *v = k == 0 ? runs[i].ttft_ms : k == 1 ? runs[i].tpot_ms : runs[i].e2el_ms;
            size_t n = k == 0 ? runs[i].n_ttft : k == 1 ? runs[i].n_tpot : runs[i].n_e2el;
            ok = cdf_line(f, &p, v, n, palette[i % 10]);
        }
        if (k == 0)
            legend(f, &p, runs, n_runs);
    }
    if (sweep && ok) {
        static const series s_ttft[] = {{"median TTFT", get_med_ttft, ""},
                                        {"p99 TTFT", get_p99_ttft, " stroke-dasharray=\"4 3\""}};
        static const series s_tpot[] = {{"mean TPOT", get_mean_tpot, ""},
                                        {"p99 TPOT", get_p99_tpot, " stroke-dasharray=\"4 3\""}};
        static const series s_e2el[] = {{"median E2EL", get_med_e2el, ""},
                                        {"p99 E2EL", get_p99_e2el, " stroke-dasharray=\"4 3\""}};
        panel p0 = {.x0 = 0, .y0 = 30 + PANEL_H}, p1 = {.x0 = PANEL_W, .y0 = 30 + PANEL_H},
              p2 = {.x0 = 2 * PANEL_W, .y0 = 30 + PANEL_H};
        tput_panel(f, &p0, runs, n_runs, "Throughput vs TTFT", s_ttft, 2, "ms");
        tput_panel(f, &p1, runs, n_runs, "Throughput vs TPOT", s_tpot, 2, "ms");
        tput_panel(f, &p2, runs, n_runs, "Throughput vs E2EL", s_e2el, 2, "ms");
    }
    fputs("</svg>\n", f);
    bool werr = ferror(f) != 0;
    if (fclose(f) || werr || !ok)
        return ok ? SP_ERR_IO : SP_ERR_NOMEM;
    return SP_OK;
}
