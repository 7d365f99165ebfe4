/* gohub-bench: WebSocket load generator for gohub (and any hub speaking the
 * same join_room / room_message / ping subset).
 *
 *   gohub-bench hold|fanout|echo --port P [options]
 *
 * The parent process only coordinates: it forks client processes (each one
 * epoll loop, see ws_client.c), drives them through pipes, samples the
 * server's /proc/PID, merges the children's fixed-size reports and prints a
 * human table followed by one JSON line (the last line on stdout).
 *
 * Several servers (cluster nodes): --ports P1,P2,... spreads each room's
 * members round-robin over them (bench_port_of in bench.h), so every room
 * has members on every node; in fanout, --pub-port P puts every publisher
 * on one node, so most deliveries cross the bus. --pid A,B,... sums the
 * servers' RSS and CPU (hold also reports RSS per PID).
 *
 * Processes: ceil(conns / 9000) client processes (or --procs), each with
 * a contiguous block of connection indices; in fanout the publishers live
 * in one extra process so their 1 ms pacing timer is not delayed by the
 * subscribers' receive work.
 *
 * Definitions behind the JSON fields:
 *   hold    connect_s = first connect() to the last connection ready (101, or
 *           room_joined with --rooms); handshakes_per_s = connected / (first
 *           connect() to last 101); failed = connections that failed twice
 *           (each failure is retried once); dropped = connections the server
 *           closed during the hold; server_cpu_s spans connect + hold.
 *   fanout  a message counts when its ts lies in the measured window: sent =
 *           messages sent in it, expected = sum over rooms of sent(room) x
 *           subscribers connected in that room, delivered = such messages
 *           received, lost = max(expected - delivered, seq gaps); the parent
 *           waits up to 2 s after the window for stragglers. A message whose
 *           seq is not above the last one received from its publisher on that
 *           connection (a duplicate, or out of order) is not delivered: it
 *           counts in out_of_order, and a step with any fails. Latency = the
 *           kernel's arrival stamp of the frame at the client socket
 *           (SO_TIMESTAMPNS, converted to CLOCK_MONOTONIC) - ts, so the
 *           client's own scheduling delay on a shared machine is not counted
 *           (the table also shows the user-space-clock figures;
 *           GOHUB_BENCH_USER_CLOCK=1 uses those for the JSON too). While
 *           measuring, a subscriber process wakes at most every 500 us
 *           (GOHUB_BENCH_RX_BATCH_US, 0 = off), which cuts its CPU per frame
 *           by ~40% and does not bias the kernel-stamped latency.
 *           server_cpu_s and the per-delivery cost cover the window only.
 *           With --step each step has its own warmup and window; the rate
 *           grows by --step-factor until a step fails, then --refine N more
 *           steps bisect between the last passing and the first failing rate
 *           (N = 3 turns a ×1.25 step into ±3%). The summary line's
 *           top-level fields are those of the best passing step (the first
 *           step when none passed).
 *   echo    replies (and errors) received within the window; latency = reply
 *           time - send time of that message_id; connected, failed and
 *           dropped as in hold.
 * Exit status: 2 usage, 1 when connections failed (or dropped during hold),
 * a client process died, or nothing was measured; 0 otherwise. */
#include "bench.h"

#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#define PER_PROC_AUTO 9000
#define PER_PROC_MAX 19000
#define MAX_INFLIGHT 500
#define DRAIN_NS (2LL * 1000000000LL)
#define MAX_STEPS 40

typedef struct {
    pid_t pid;
    int cmd_fd, rep_fd;
    bench_worker_cfg_t wc;
    bench_report_t rep;
    uint64_t *extra;
    uint32_t nextra;
} child_t;

static bench_opts_t O;
static child_t *kids;
static int nkids;

/* ---- usage ------------------------------------------------------------- */

static void usage(const char *fmt, ...)
{
    if (fmt != NULL) {
        va_list ap;
        va_start(ap, fmt);
        fputs("gohub-bench: ", stderr);
        vfprintf(stderr, fmt, ap);
        fputc('\n', stderr);
        va_end(ap);
    }
    fputs("usage: gohub-bench hold|fanout|echo --port P [options]\n"
          "  common: --host H --path /ws --pid PID --label NAME --src-addrs A-B --procs N --quiet\n"
          "          --ports P1,P2,... (several servers, e.g. cluster nodes: each room's members\n"
          "          round-robin over them; instead of --port)\n"
          "          --pid PID1,PID2,... (RSS and CPU summed, RSS also per PID)\n"
          "  hold:   --conns N --rooms R --hold S\n"
          "  fanout: --conns N --rooms R --publishers K --rate M --duration S --warmup W\n"
          "          --step --step-factor F --refine N --p99-limit MS\n"
          "          --pub-port P (every publisher on the server at port P; default: spread)\n"
          "  echo:   --conns N --window W --type T --duration S --warmup W\n",
          stderr);
    exit(2);
}

static long parse_long(const char *opt, const char *v, long min, long max)
{
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || end == v || *end || x < min || x > max)
        usage("%s: expected an integer in [%ld, %ld], got '%s'", opt, min, max, v);
    return x;
}

static double parse_double(const char *opt, const char *v, double min, double max)
{
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (errno || end == v || *end || !(x >= min) || !(x <= max))
        usage("%s: expected a number in [%g, %g], got '%s'", opt, min, max, v);
    return x;
}

static void copy_str(const char *opt, char *dst, size_t cap, const char *v)
{
    if (strlen(v) >= cap)
        usage("%s: too long", opt);
    strcpy(dst, v);
}

/* "A,B,C": integers in [1, max]; returns how many (at least 1) */
static int parse_list(const char *opt, const char *v, int *out, int cap, long max)
{
    char buf[1024];
    copy_str(opt, buf, sizeof(buf), v);
    int n = 0;
    char *save = NULL;
    for (char *t = strtok_r(buf, ",", &save); t != NULL; t = strtok_r(NULL, ",", &save)) {
        if (n == cap)
            usage("%s: at most %d values", opt, cap);
        out[n++] = (int)parse_long(opt, t, 1, max);
    }
    if (n == 0)
        usage("%s needs a value", opt);
    return n;
}

static uint32_t parse_ip4(const char *opt, const char *s)
{
    struct in_addr a;
    if (inet_pton(AF_INET, s, &a) != 1)
        usage("%s: bad IPv4 address '%s'", opt, s);
    return ntohl(a.s_addr);
}

static void parse_args(int argc, char **argv)
{
    if (argc < 2)
        usage(NULL);
    const char *m = argv[1];
    if (strcmp(m, "hold") == 0)
        O.mode = MODE_HOLD;
    else if (strcmp(m, "fanout") == 0)
        O.mode = MODE_FANOUT;
    else if (strcmp(m, "echo") == 0)
        O.mode = MODE_ECHO;
    else if (strcmp(m, "-h") == 0 || strcmp(m, "--help") == 0)
        usage(NULL);
    else
        usage("unknown mode '%s'", m);
    strcpy(O.host, "127.0.0.1");
    strcpy(O.path, "/ws");
    O.src_first = 0x7F000002u;
    O.src_last = 0x7F000009u;
    O.conns = O.mode == MODE_HOLD ? 1000 : O.mode == MODE_FANOUT ? 10000 : 100;
    O.rooms = O.mode == MODE_FANOUT ? 100 : 0;
    O.hold_s = 2;
    O.publishers = -1;
    O.rate = 100;
    O.duration = 5;
    O.warmup = 1;
    O.step_factor = 1.5;
    O.p99_limit_ms = 20;
    O.window = 1;
    strcpy(O.type, "ping");
    for (int i = 2; i < argc; i++) {
        char name[64];
        const char *a = argv[i], *v = NULL;
        if (strncmp(a, "--", 2) != 0)
            usage("unexpected argument '%s'", a);
        const char *eq = strchr(a, '=');
        size_t nl = eq ? (size_t)(eq - a) : strlen(a);
        if (nl >= sizeof(name))
            usage("unknown option '%s'", a);
        memcpy(name, a, nl);
        name[nl] = '\0';
        if (strcmp(name, "--quiet") == 0) {
            O.quiet = 1;
            continue;
        }
        if (strcmp(name, "--step") == 0) {
            O.step = 1;
            continue;
        }
        if (eq)
            v = eq + 1;
        else if (i + 1 < argc)
            v = argv[++i];
        else
            usage("%s needs a value", name);
        if (strcmp(name, "--host") == 0)
            copy_str(name, O.host, sizeof(O.host), v);
        else if (strcmp(name, "--port") == 0) {
            O.port = (int)parse_long(name, v, 1, 65535);
            O.ports[0] = O.port;
            O.nports = 1;
        } else if (strcmp(name, "--ports") == 0) {
            O.nports = parse_list(name, v, O.ports, BENCH_MAX_PORTS, 65535);
            O.port = O.ports[0];
        } else if (strcmp(name, "--pub-port") == 0)
            O.pub_port = (int)parse_long(name, v, 1, 65535);
        else if (strcmp(name, "--path") == 0) {
            copy_str(name, O.path, sizeof(O.path), v);
            if (O.path[0] != '/' || strpbrk(O.path, " \r\n"))
                usage("--path must start with / and hold no spaces");
        } else if (strcmp(name, "--pid") == 0) {
            O.npids = parse_list(name, v, O.pids, BENCH_MAX_PIDS, 1L << 30);
            O.pid = O.pids[0];
        }
        else if (strcmp(name, "--label") == 0)
            copy_str(name, O.label, sizeof(O.label), v);
        else if (strcmp(name, "--src-addrs") == 0) {
            char buf[64];
            copy_str(name, buf, sizeof(buf), v);
            char *dash = strchr(buf, '-');
            if (dash)
                *dash = '\0';
            O.src_first = parse_ip4(name, buf);
            O.src_last = dash ? parse_ip4(name, dash + 1) : O.src_first;
            if (O.src_last < O.src_first || O.src_last - O.src_first > 65535)
                usage("--src-addrs: bad range '%s'", v);
        } else if (strcmp(name, "--procs") == 0)
            O.procs = (int)parse_long(name, v, 1, 1000);
        else if (strcmp(name, "--conns") == 0)
            O.conns = parse_long(name, v, 1, 10000000);
        else if (strcmp(name, "--rooms") == 0)
            O.rooms = parse_long(name, v, 0, 10000000);
        else if (strcmp(name, "--hold") == 0)
            O.hold_s = parse_double(name, v, 0, 86400);
        else if (strcmp(name, "--publishers") == 0)
            O.publishers = parse_long(name, v, 1, PER_PROC_MAX);
        else if (strcmp(name, "--rate") == 0)
            O.rate = parse_double(name, v, 0.001, 1e8);
        else if (strcmp(name, "--duration") == 0)
            O.duration = parse_double(name, v, 0.01, 86400);
        else if (strcmp(name, "--warmup") == 0)
            O.warmup = parse_double(name, v, 0, 86400);
        else if (strcmp(name, "--step-factor") == 0)
            O.step_factor = parse_double(name, v, 1.001, 1000);
        else if (strcmp(name, "--refine") == 0)
            O.refine = (int)parse_double(name, v, 0, 10);
        else if (strcmp(name, "--p99-limit") == 0)
            O.p99_limit_ms = parse_double(name, v, 0, 1e7);
        else if (strcmp(name, "--window") == 0)
            O.window = parse_long(name, v, 1, 65536);
        else if (strcmp(name, "--type") == 0) {
            copy_str(name, O.type, sizeof(O.type), v);
            if (strpbrk(O.type, "\"\\") || O.type[0] == '\0')
                usage("--type: no quotes or backslashes");
        } else
            usage("unknown option '%s'", name);
    }
    if (O.port == 0)
        usage("--port (or --ports) is required");
    if (O.pub_port && O.mode != MODE_FANOUT)
        usage("--pub-port is for fanout");
    struct in_addr tmp;
    if (inet_pton(AF_INET, O.host, &tmp) != 1)
        usage("--host must be an IPv4 address, got '%s'", O.host);
    if (O.mode == MODE_FANOUT) {
        if (O.rooms < 1)
            usage("fanout needs --rooms >= 1");
        if (O.publishers < 0)
            O.publishers = O.rooms;
        if (O.publishers > PER_PROC_MAX)
            usage("--publishers at most %d", PER_PROC_MAX);
    }
}

/* ---- /proc sampling ------------------------------------------------------ */

static long pid_rss_kb(int pid)
{
    char path[64], line[256];
    snprintf(path, sizeof(path), "/proc/%d/status", pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -1;
    long kb = -1;
    while (fgets(line, sizeof(line), f))
        if (strncmp(line, "VmRSS:", 6) == 0) {
            kb = strtol(line + 6, NULL, 10);
            break;
        }
    fclose(f);
    return kb;
}

/* VmRSS summed over the --pid processes (per process into by_pid when not
 * NULL), -1 if unknown */
static long proc_rss_kb_each(long *by_pid)
{
    if (O.npids == 0)
        return -1;
    long sum = 0;
    for (int i = 0; i < O.npids; i++) {
        long kb = pid_rss_kb(O.pids[i]);
        if (by_pid)
            by_pid[i] = kb;
        if (kb < 0 || sum < 0)
            sum = -1;
        else
            sum += kb;
    }
    return sum;
}

static long proc_rss_kb(void)
{
    return proc_rss_kb_each(NULL);
}

/* utime + stime in seconds, -1 if unknown */
static double pid_cpu_s(int pid)
{
    char path[64], buf[2048];
    snprintf(path, sizeof(path), "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -1;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')'); /* comm may hold spaces */
    if (p == NULL)
        return -1;
    p++;
    /* p is before field 3; utime is field 14, stime 15 */
    unsigned long long ut = 0, st = 0;
    int field = 2;
    char *save = NULL;
    for (char *t = strtok_r(p, " ", &save); t != NULL; t = strtok_r(NULL, " ", &save)) {
        field++;
        if (field == 14)
            ut = strtoull(t, NULL, 10);
        else if (field == 15) {
            st = strtoull(t, NULL, 10);
            break;
        }
    }
    if (field < 15)
        return -1;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

/* summed over the --pid processes, -1 if unknown */
static double proc_cpu_s(void)
{
    if (O.npids == 0)
        return -1;
    double sum = 0;
    for (int i = 0; i < O.npids; i++) {
        double c = pid_cpu_s(O.pids[i]);
        if (c < 0)
            return -1;
        sum += c;
    }
    return sum;
}

/* ---- children ----------------------------------------------------------- */

static int read_full(int fd, void *buf, size_t len)
{
    uint8_t *p = buf;
    while (len > 0) {
        ssize_t k = read(fd, p, len);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return -1;
        p += k;
        len -= (size_t)k;
    }
    return 0;
}

static void spawn(child_t *ch)
{
    int cmd[2], rep[2];
    if (pipe(cmd) != 0 || pipe(rep) != 0) {
        perror("gohub-bench: pipe");
        exit(1);
    }
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) {
        perror("gohub-bench: fork");
        exit(1);
    }
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() == 1)
            _exit(1);
        for (child_t *k = kids; k < ch; k++) { /* the earlier children's pipes */
            close(k->cmd_fd);
            close(k->rep_fd);
        }
        close(cmd[1]);
        close(rep[0]);
        int rc = bench_worker_main(&O, &ch->wc, cmd[0], rep[1]);
        _exit(rc);
    }
    close(cmd[0]);
    close(rep[1]);
    ch->pid = pid;
    ch->cmd_fd = cmd[1];
    ch->rep_fd = rep[0];
}

static int read_report(child_t *ch)
{
    if (read_full(ch->rep_fd, &ch->rep, sizeof(ch->rep)) != 0) {
        fprintf(stderr, "gohub-bench: client process %d died\n", (int)ch->pid);
        return -1;
    }
    if (ch->rep.nextra) {
        if (ch->rep.nextra > ch->nextra) {
            free(ch->extra);
            ch->extra = calloc(ch->rep.nextra, sizeof(uint64_t));
            ch->nextra = ch->rep.nextra;
            if (ch->extra == NULL)
                return -1;
        }
        if (read_full(ch->rep_fd, ch->extra, (size_t)ch->rep.nextra * sizeof(uint64_t)) != 0)
            return -1;
    }
    return 0;
}

static int send_cmd(child_t *ch, uint32_t cmd, int64_t t_start, int64_t t_end, double rate)
{
    bench_cmd_t c = {.cmd = cmd, .t_start = t_start, .t_end = t_end, .rate = rate};
    return write(ch->cmd_fd, &c, sizeof(c)) == (ssize_t)sizeof(c) ? 0 : -1;
}

/* CMD_REPORT to every child in [from, to), then read each answer */
static int collect(int from, int to)
{
    for (int i = from; i < to; i++)
        if (send_cmd(&kids[i], CMD_REPORT, 0, 0, 0) != 0)
            return -1;
    for (int i = from; i < to; i++)
        if (read_report(&kids[i]) != 0)
            return -1;
    return 0;
}

static void stop_children(void)
{
    for (int i = 0; i < nkids; i++)
        send_cmd(&kids[i], CMD_EXIT, 0, 0, 0);
    for (int i = 0; i < nkids; i++) {
        close(kids[i].cmd_fd);
        close(kids[i].rep_fd);
        waitpid(kids[i].pid, NULL, 0);
    }
}

static void sleep_until(int64_t t)
{
    struct timespec ts = {.tv_sec = t / 1000000000LL, .tv_nsec = t % 1000000000LL};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
        ;
}

static void msleep(long ms)
{
    sleep_until(bench_now_ns() + ms * 1000000LL);
}

static void info(const char *fmt, ...)
{
    if (O.quiet)
        return;
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
}

/* subscriber / connection processes for `conns` connections */
static int plan_procs(long conns)
{
    long p = O.procs ? O.procs : (conns + PER_PROC_AUTO - 1) / PER_PROC_AUTO;
    long min = (conns + PER_PROC_MAX - 1) / PER_PROC_MAX;
    if (p < min) {
        fprintf(stderr, "gohub-bench: --procs %d would put more than %d sockets in a process; using %ld\n",
                O.procs, PER_PROC_MAX, min);
        p = min;
    }
    if (p > conns)
        p = conns;
    return p < 1 ? 1 : (int)p;
}

static void setup_children(long conns, int role, int with_pub)
{
    int np = plan_procs(conns);
    nkids = np + (with_pub ? 1 : 0);
    kids = calloc((size_t)nkids, sizeof(child_t));
    if (kids == NULL)
        exit(1);
    for (int i = 0; i < np; i++) {
        bench_worker_cfg_t *wc = &kids[i].wc;
        wc->role = role;
        wc->child_id = i;
        wc->first = (uint32_t)(conns * i / np);
        wc->count = (uint32_t)(conns * (i + 1) / np) - wc->first;
        wc->rooms = (uint32_t)O.rooms;
        wc->publishers = with_pub ? (uint32_t)O.publishers : 0;
        wc->max_inflight = MAX_INFLIGHT;
    }
    if (with_pub) {
        bench_worker_cfg_t *wc = &kids[np].wc;
        wc->role = ROLE_PUB;
        wc->child_id = np;
        wc->first = 0;
        wc->count = (uint32_t)O.publishers;
        wc->rooms = (uint32_t)O.rooms;
        wc->publishers = (uint32_t)O.publishers;
        wc->max_inflight = MAX_INFLIGHT;
    }
    for (int i = 0; i < nkids; i++)
        spawn(&kids[i]);
}

typedef struct {
    uint64_t connected, failed, retried, dropped;
    int64_t t_first_connect, t_last_101, t_last_ready;
    const char *first_error;
} conn_sum_t;

/* waits for every child's READY report */
static int wait_ready(conn_sum_t *s)
{
    memset(s, 0, sizeof(*s));
    for (int i = 0; i < nkids; i++) {
        if (read_report(&kids[i]) != 0)
            return -1;
        bench_report_t *r = &kids[i].rep;
        if (r->type != REP_READY)
            return -1;
        s->connected += r->connected;
        s->failed += r->failed;
        s->retried += r->retried;
        s->dropped += r->dropped;
        if (r->t_first_connect && (!s->t_first_connect || r->t_first_connect < s->t_first_connect))
            s->t_first_connect = r->t_first_connect;
        if (r->t_last_101 > s->t_last_101)
            s->t_last_101 = r->t_last_101;
        if (r->t_last_ready > s->t_last_ready)
            s->t_last_ready = r->t_last_ready;
        if (r->first_error[0] && s->first_error == NULL)
            s->first_error = r->first_error;
    }
    return 0;
}

/* the client processes' own cost: CPU and frames, summed over [from, to) */
typedef struct {
    int64_t cpu_ns, t;
    uint64_t frames, recvs, wakeups;
} selfstat_t;

static selfstat_t self_sum(int from, int to)
{
    selfstat_t s = {.t = bench_now_ns()};
    for (int i = from; i < to; i++) {
        s.cpu_ns += kids[i].rep.cpu_ns;
        s.frames += kids[i].rep.frames_total;
        s.recvs += kids[i].rep.recvs_total;
        s.wakeups += kids[i].rep.wakeups_total;
    }
    return s;
}

static void self_print(const char *who, const selfstat_t *a, const selfstat_t *b, int nproc)
{
    if (O.quiet)
        return;
    double cpu = (double)(b->cpu_ns - a->cpu_ns) / 1e9, wall = (double)(b->t - a->t) / 1e9;
    uint64_t fr = b->frames - a->frames, rc = b->recvs - a->recvs, wk = b->wakeups - a->wakeups;
    printf("  bench %s (%d proc): %.2f CPU s over %.1f s (%.0f%% of one core), %llu frames in, "
           "%.2f us CPU per frame, %.2f frames per recv, %.1f recvs per wakeup\n",
           who, nproc, cpu, wall, wall > 0 ? 100 * cpu / wall : 0, (unsigned long long)fr,
           fr ? cpu * 1e6 / (double)fr : 0, rc ? (double)fr / (double)rc : 0,
           wk ? (double)rc / (double)wk : 0);
}

/* ---- JSON output ---------------------------------------------------------- */

static char jbuf[1 << 16];
static size_t jlen;

static void jraw(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(jbuf + jlen, sizeof(jbuf) - jlen, fmt, ap);
    va_end(ap);
    if (n > 0)
        jlen += (size_t)n < sizeof(jbuf) - jlen ? (size_t)n : sizeof(jbuf) - jlen - 1;
}

static void jstr(const char *s)
{
    jraw("\"");
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            jraw("\\%c", ch);
        else if (ch < 0x20)
            jraw("\\u%04x", ch);
        else
            jraw("%c", ch);
    }
    jraw("\"");
}

/* a number with at most `dec` decimals, trailing zeros trimmed; null if < 0 and nullable */
static void jnum(double v, int dec, int nullable)
{
    if ((nullable && v < 0) || !isfinite(v)) {
        jraw("null");
        return;
    }
    char b[64];
    snprintf(b, sizeof(b), "%.*f", dec, v);
    if (strchr(b, '.')) {
        size_t l = strlen(b);
        while (b[l - 1] == '0')
            b[--l] = '\0';
        if (b[l - 1] == '.')
            b[--l] = '\0';
    }
    if (strcmp(b, "-0") == 0)
        strcpy(b, "0");
    jraw("%s", b);
}

static void jkey(const char *k)
{
    if (jlen > 0 && jbuf[jlen - 1] != '{' && jbuf[jlen - 1] != '[')
        jraw(",");
    jstr(k);
    jraw(":");
}

static void jflush(void)
{
    fwrite(jbuf, 1, jlen, stdout);
    fputc('\n', stdout);
    fflush(stdout);
    jlen = 0;
}

static double ms(uint64_t ns)
{
    return (double)ns / 1e6;
}

/* ---- hold ---------------------------------------------------------------- */

static int run_hold(void)
{
    long rss_before_by[BENCH_MAX_PIDS], rss_after_by[BENCH_MAX_PIDS];
    long rss_before = proc_rss_kb_each(rss_before_by);
    double cpu0 = proc_cpu_s();
    info("hold: %ld connections, %ld rooms\n", O.conns, O.rooms);
    setup_children(O.conns, ROLE_SUB, 0);
    conn_sum_t s;
    int ok = wait_ready(&s) == 0;
    selfstat_t ready = self_sum(0, nkids);
    if (ok) {
        info("connected %llu, failed %llu; holding %.1f s\n", (unsigned long long)s.connected,
             (unsigned long long)s.failed, O.hold_s);
        sleep_until(bench_now_ns() + (int64_t)(O.hold_s * 1e9));
        ok = collect(0, nkids) == 0;
    }
    uint64_t dropped = 0;
    if (ok)
        for (int i = 0; i < nkids; i++)
            dropped += kids[i].rep.dropped;
    long rss_after = proc_rss_kb_each(rss_after_by);
    double cpu1 = proc_cpu_s();
    stop_children();
    if (!ok)
        return 1;

    double hs_span = (double)(s.t_last_101 - s.t_first_connect) / 1e9;
    double conn_span = (double)(s.t_last_ready - s.t_first_connect) / 1e9;
    if (s.connected == 0)
        hs_span = conn_span = 0;
    double hps = hs_span > 0 ? (double)s.connected / hs_span : 0;
    int have_bpc = rss_before >= 0 && rss_after >= 0 && s.connected > 0;
    double bpc = have_bpc ? (double)(rss_after - rss_before) * 1024.0 / (double)s.connected : 0;
    double cpu = cpu0 >= 0 && cpu1 >= 0 ? cpu1 - cpu0 : -1;
    if (!O.quiet) {
        printf("gohub-bench hold  label=%s  conns=%ld rooms=%ld procs=%d\n", O.label, O.conns, O.rooms,
               nkids);
        printf("  connected      %10llu   failed %llu  retried %llu  dropped during hold %llu\n",
               (unsigned long long)s.connected, (unsigned long long)s.failed,
               (unsigned long long)s.retried, (unsigned long long)dropped);
        printf("  connect time   %10.3f s (first connect() to last %s)\n", conn_span,
               O.rooms > 0 ? "room_joined" : "101");
        printf("  handshakes/s   %10.0f\n", hps);
        if (rss_before >= 0)
            printf("  server RSS     %10ld kB before, %ld kB after, %.0f bytes/conn\n", rss_before,
                   rss_after, bpc);
        if (O.npids > 1)
            for (int i = 0; i < O.npids; i++)
                printf("    pid %-8d %10ld kB before, %ld kB after\n", O.pids[i], rss_before_by[i],
                       rss_after_by[i]);
        if (cpu >= 0)
            printf("  server CPU     %10.2f s\n", cpu);
        if (s.first_error)
            printf("  first error    %s\n", s.first_error);
        printf("  bench clients  %10.2f CPU s for the connect phase (%d procs), %.1f us per connection\n",
               (double)ready.cpu_ns / 1e9, nkids,
               s.connected ? (double)ready.cpu_ns / 1e3 / (double)s.connected : 0);
    }
    jraw("{");
    jkey("mode"), jstr("hold");
    jkey("label"), jstr(O.label);
    jkey("conns"), jraw("%ld", O.conns);
    jkey("rooms"), jraw("%ld", O.rooms);
    jkey("connected"), jraw("%llu", (unsigned long long)s.connected);
    jkey("failed"), jraw("%llu", (unsigned long long)s.failed);
    jkey("dropped"), jraw("%llu", (unsigned long long)dropped);
    jkey("connect_s"), jnum(conn_span, 3, 0);
    jkey("handshakes_per_s"), jnum(hps, 0, 0);
    jkey("rss_before_kb"), jnum((double)rss_before, 0, 1);
    jkey("rss_after_kb"), jnum((double)rss_after, 0, 1);
    jkey("bytes_per_conn"), have_bpc ? jnum(bpc, 1, 0) : jraw("null");
    jkey("server_cpu_s"), jnum(cpu, 2, 1);
    if (O.nports > 1)
        jkey("ports"), jraw("%d", O.nports);
    if (O.npids > 1) { /* per server, in --pid order */
        jkey("rss_before_by_pid_kb"), jraw("[");
        for (int i = 0; i < O.npids; i++)
            jraw(i ? ",%ld" : "%ld", rss_before_by[i]);
        jraw("]");
        jkey("rss_after_by_pid_kb"), jraw("[");
        for (int i = 0; i < O.npids; i++)
            jraw(i ? ",%ld" : "%ld", rss_after_by[i]);
        jraw("]");
    }
    jraw("}");
    jflush();
    return s.failed > 0 || s.connected == 0 || dropped > 0 ? 1 : 0;
}

/* ---- fanout ------------------------------------------------------------- */

typedef struct {
    double rate;
    uint64_t sent, sent_total, expected, delivered, lost, gaps, reordered;
    double delivered_per_s, p50_ms, p99_ms, max_ms, cpu_s, us_per_delivery;
    double u_p50_ms, u_p99_ms, u_max_ms; /* user-space receive clock */
    long rss_kb;
    int pass;
    int pub_limited;
} step_t;

static void step_json_fields(const step_t *st)
{
    jkey("rate"), jnum(st->rate, 3, 0);
    jkey("delivered_per_s"), jnum(st->delivered_per_s, 1, 0);
    jkey("p50_ms"), jnum(st->p50_ms, 3, 0);
    jkey("p99_ms"), jnum(st->p99_ms, 3, 0);
    jkey("max_ms"), jnum(st->max_ms, 3, 0);
    jkey("lost"), jraw("%llu", (unsigned long long)st->lost);
    jkey("out_of_order"), jraw("%llu", (unsigned long long)st->reordered);
    jkey("server_us_per_delivery"), jnum(st->us_per_delivery, 3, 1);
}

static void fanout_json(const step_t *top, const step_t *steps, int nsteps, const step_t *best,
                        int summary)
{
    jraw("{");
    jkey("mode"), jstr("fanout");
    jkey("label"), jstr(O.label);
    jkey("conns"), jraw("%ld", O.conns);
    jkey("rooms"), jraw("%ld", O.rooms);
    jkey("publishers"), jraw("%ld", O.publishers);
    jkey("rate"), jnum(top->rate, 3, 0);
    jkey("sent"), jraw("%llu", (unsigned long long)top->sent);
    jkey("expected"), jraw("%llu", (unsigned long long)top->expected);
    jkey("delivered"), jraw("%llu", (unsigned long long)top->delivered);
    jkey("lost"), jraw("%llu", (unsigned long long)top->lost);
    jkey("out_of_order"), jraw("%llu", (unsigned long long)top->reordered);
    jkey("delivered_per_s"), jnum(top->delivered_per_s, 1, 0);
    jkey("p50_ms"), jnum(top->p50_ms, 3, 0);
    jkey("p99_ms"), jnum(top->p99_ms, 3, 0);
    jkey("max_ms"), jnum(top->max_ms, 3, 0);
    jkey("server_cpu_s"), jnum(top->cpu_s, 2, 1);
    jkey("server_us_per_delivery"), jnum(top->us_per_delivery, 3, 1);
    jkey("rss_kb"), jnum((double)top->rss_kb, 0, 1);
    if (O.nports > 1)
        jkey("ports"), jraw("%d", O.nports);
    if (O.pub_port)
        jkey("pub_port"), jraw("%d", O.pub_port);
    if (summary) {
        jkey("steps"), jraw("[");
        for (int i = 0; i < nsteps; i++) {
            if (i)
                jraw(",");
            jraw("{");
            step_json_fields(&steps[i]);
            jraw("}");
        }
        jraw("]");
        jkey("best");
        if (best) {
            jraw("{");
            jkey("rate"), jnum(best->rate, 3, 0);
            jkey("delivered_per_s"), jnum(best->delivered_per_s, 1, 0);
            jkey("p99_ms"), jnum(best->p99_ms, 3, 0);
            jkey("server_us_per_delivery"), jnum(best->us_per_delivery, 3, 1);
            jraw("}");
        } else {
            jraw("null");
        }
    } else {
        jkey("step"), jraw("%d", nsteps);
    }
    jraw("}");
    jflush();
}

/* one measured window at `rate`; returns -1 if a client process failed */
static int fanout_step(double rate, const uint64_t *subs_per_room, int nsub, step_t *st)
{
    child_t *pub = &kids[nsub];
    memset(st, 0, sizeof(*st));
    st->rate = rate;
    int64_t t_start = bench_now_ns() + (int64_t)(O.warmup * 1e9);
    int64_t t_end = t_start + (int64_t)(O.duration * 1e9);
    for (int i = 0; i < nkids; i++)
        if (send_cmd(&kids[i], CMD_GO, t_start, t_end, rate) != 0)
            return -1;
    sleep_until(t_start);
    double cpu0 = proc_cpu_s();
    sleep_until(t_end);
    double cpu1 = proc_cpu_s();
    st->rss_kb = proc_rss_kb();
    msleep(20);
    if (collect(nsub, nsub + 1) != 0)
        return -1;
    st->sent = pub->rep.sent;
    st->sent_total = pub->rep.sent_total;
    for (long r = 0; r < O.rooms && r < (long)pub->rep.nextra; r++)
        st->expected += pub->extra[r] * subs_per_room[r];
    /* drain: wait until everything sent in the window has arrived (or 2 s) */
    bench_hist_t *h = calloc(2, sizeof(*h)), *uh = h + 1;
    if (h == NULL)
        return -1;
    for (;;) {
        if (collect(0, nsub) != 0) {
            free(h);
            return -1;
        }
        uint64_t d = 0;
        for (int i = 0; i < nsub; i++)
            d += kids[i].rep.delivered;
        if (d >= st->expected || bench_now_ns() > t_end + DRAIN_NS)
            break;
        msleep(50);
    }
    for (int i = 0; i < nsub; i++) {
        bench_report_t *r = &kids[i].rep;
        st->delivered += r->delivered;
        st->gaps += r->gaps;
        st->reordered += r->reordered;
        bench_hist_merge(h, &r->hist);
        bench_hist_merge(uh, &r->uhist);
    }
    uint64_t missing = st->expected > st->delivered ? st->expected - st->delivered : 0;
    st->lost = missing > st->gaps ? missing : st->gaps;
    st->delivered_per_s = (double)st->delivered / O.duration;
    st->p50_ms = ms(bench_hist_quantile(h, 0.50));
    st->p99_ms = ms(bench_hist_quantile(h, 0.99));
    st->max_ms = ms(h->max);
    st->u_p50_ms = ms(bench_hist_quantile(uh, 0.50));
    st->u_p99_ms = ms(bench_hist_quantile(uh, 0.99));
    st->u_max_ms = ms(uh->max);
    free(h);
    st->cpu_s = cpu0 >= 0 && cpu1 >= 0 ? cpu1 - cpu0 : -1;
    st->us_per_delivery = st->cpu_s >= 0 && st->delivered ? st->cpu_s * 1e6 / (double)st->delivered : -1;
    st->pass = st->lost == 0 && st->reordered == 0 && st->p99_ms <= O.p99_limit_ms &&
               st->delivered > 0;
    st->pub_limited = (double)st->sent < 0.95 * rate * O.duration - 1;
    return 0;
}

static void step_row(const step_t *st)
{
    if (O.quiet)
        return;
    char cpu[32] = "-", usd[32] = "-";
    if (st->cpu_s >= 0)
        snprintf(cpu, sizeof(cpu), "%.2f", st->cpu_s);
    if (st->us_per_delivery >= 0)
        snprintf(usd, sizeof(usd), "%.2f", st->us_per_delivery);
    printf("  %10.1f %9llu %10llu %10llu %8llu %11.0f %8.3f %8.3f %9.3f %7s %8s %s%s\n", st->rate,
           (unsigned long long)st->sent, (unsigned long long)st->expected,
           (unsigned long long)st->delivered, (unsigned long long)st->lost, st->delivered_per_s,
           st->p50_ms, st->p99_ms, st->max_ms, cpu, usd,
           st->pass ? "ok" : "FAIL", st->pub_limited ? " (publisher below rate)" : "");
    if (st->reordered)
        printf("  %10s %llu deliveries duplicated or out of order (not counted as delivered)\n", "",
               (unsigned long long)st->reordered);
    printf("  %10s latency by the client's user-space clock (incl. client delays): p50 %.3f  "
           "p99 %.3f  max %.3f ms\n",
           "", st->u_p50_ms, st->u_p99_ms, st->u_max_ms);
    fflush(stdout);
}

static int run_fanout(void)
{
    info("fanout: %ld subscribers in %ld rooms, %ld publishers\n", O.conns, O.rooms, O.publishers);
    setup_children(O.conns, ROLE_SUB, 1);
    int nsub = nkids - 1;
    conn_sum_t s;
    if (wait_ready(&s) != 0) {
        stop_children();
        return 1;
    }
    uint64_t *subs_per_room = calloc((size_t)O.rooms, sizeof(uint64_t));
    if (subs_per_room == NULL)
        exit(1);
    for (int i = 0; i < nsub; i++)
        for (uint32_t r = 0; r < kids[i].rep.nextra && r < (uint32_t)O.rooms; r++)
            subs_per_room[r] += kids[i].extra[r];
    uint64_t pubs_ok = kids[nsub].rep.connected;
    info("connected %llu subscribers + %llu publishers, failed %llu\n",
         (unsigned long long)(s.connected - pubs_ok), (unsigned long long)pubs_ok,
         (unsigned long long)s.failed);
    if (s.failed > 0 || pubs_ok == 0) {
        if (!O.quiet)
            printf("gohub-bench fanout: %llu connections failed (%s)\n", (unsigned long long)s.failed,
                   s.first_error ? s.first_error : "?");
        step_t none;
        memset(&none, 0, sizeof(none));
        none.cpu_s = none.us_per_delivery = -1;
        none.rss_kb = proc_rss_kb();
        none.rate = O.rate;
        stop_children();
        free(subs_per_room);
        fanout_json(&none, NULL, 0, NULL, 1);
        return 1;
    }
    if (!O.quiet) {
        printf("gohub-bench fanout  label=%s  subscribers=%ld rooms=%ld publishers=%ld procs=%d+1\n",
               O.label, O.conns, O.rooms, O.publishers, nsub);
        printf("  %10s %9s %10s %10s %8s %11s %8s %8s %9s %7s %8s\n", "rate", "sent", "expected",
               "delivered", "lost", "deliv/s", "p50_ms", "p99_ms", "max_ms", "cpu_s", "us/deliv");
    }
    step_t steps[MAX_STEPS];
    int nsteps = 0, rc = 0;
    double rate = O.rate, lo = 0, hi = 0; /* highest passing, lowest failing rate */
    int refine_left = O.refine;
    selfstat_t sub0 = self_sum(0, nsub), pub0 = self_sum(nsub, nkids);
    for (;;) {
        step_t *st = &steps[nsteps];
        if (fanout_step(rate, subs_per_room, nsub, st) != 0) {
            rc = 1;
            break;
        }
        nsteps++;
        step_row(st);
        selfstat_t sub1 = self_sum(0, nsub), pub1 = self_sum(nsub, nkids);
        self_print("subscribers", &sub0, &sub1, nsub);
        self_print("publishers ", &pub0, &pub1, 1);
        sub0 = sub1;
        pub0 = pub1;
        if (O.step && !O.quiet)
            fanout_json(st, steps, nsteps, NULL, 0);
        if (!O.step || st->pub_limited || nsteps == MAX_STEPS)
            break;
        if (hi == 0 && st->pass) { /* stepping up */
            lo = rate;
            rate *= O.step_factor;
            continue;
        }
        if (hi == 0) { /* the first failing step */
            if (lo == 0)
                break;
            hi = rate;
        } else if (st->pass) { /* refining between the last pass and the first fail */
            lo = rate;
        } else {
            hi = rate;
        }
        if (refine_left-- <= 0)
            break;
        rate = (lo + hi) / 2;
    }
    uint64_t dropped = 0;
    if (rc == 0 && collect(0, nkids) == 0)
        for (int i = 0; i < nkids; i++)
            dropped += kids[i].rep.dropped;
    stop_children();
    free(subs_per_room);
    if (nsteps == 0)
        return 1;
    const step_t *best = NULL;
    for (int i = 0; i < nsteps; i++)
        if (steps[i].pass && (best == NULL || steps[i].delivered_per_s > best->delivered_per_s))
            best = &steps[i];
    const step_t *top = best ? best : &steps[0];
    if (!O.quiet) {
        if (steps[nsteps - 1].pub_limited)
            printf("  note: the publishers could not send at the target rate: the bench, not the "
                   "server, was the limit\n");
        if (dropped)
            printf("  note: %llu connections were closed by the server during the run\n",
                   (unsigned long long)dropped);
        if (best && best->us_per_delivery >= 0)
            printf("  best: rate %.1f, %.0f delivered/s, p99 %.3f ms, %.2f us server CPU per delivery\n",
                   best->rate, best->delivered_per_s, best->p99_ms, best->us_per_delivery);
        else if (best)
            printf("  best: rate %.1f, %.0f delivered/s, p99 %.3f ms\n", best->rate,
                   best->delivered_per_s, best->p99_ms);
        else
            printf("  best: none (no step met p99 <= %g ms without loss or duplicates)\n",
                   O.p99_limit_ms);
    }
    fanout_json(top, steps, nsteps, best, 1);
    return rc;
}

/* ---- echo -------------------------------------------------------------- */

static int run_echo(void)
{
    info("echo: %ld connections, window %ld, type %s\n", O.conns, O.window, O.type);
    setup_children(O.conns, ROLE_ECHO, 0);
    conn_sum_t s;
    if (wait_ready(&s) != 0) {
        stop_children();
        return 1;
    }
    if (s.failed > 0 || s.connected == 0) {
        if (!O.quiet)
            printf("gohub-bench echo: %llu connections failed (%s)\n", (unsigned long long)s.failed,
                   s.first_error ? s.first_error : "?");
    }
    selfstat_t self0 = self_sum(0, nkids);
    int64_t t_start = bench_now_ns() + (int64_t)(O.warmup * 1e9);
    int64_t t_end = t_start + (int64_t)(O.duration * 1e9);
    int ok = 1;
    for (int i = 0; i < nkids; i++)
        if (send_cmd(&kids[i], CMD_GO, t_start, t_end, 0) != 0)
            ok = 0;
    sleep_until(t_start);
    double cpu0 = proc_cpu_s();
    sleep_until(t_end);
    double cpu1 = proc_cpu_s();
    msleep(50);
    bench_hist_t *h = calloc(1, sizeof(*h));
    uint64_t replies = 0, errors = 0, dropped = 0;
    if (ok && h && collect(0, nkids) == 0) {
        for (int i = 0; i < nkids; i++) {
            replies += kids[i].rep.replies;
            errors += kids[i].rep.errors;
            dropped += kids[i].rep.dropped;
            bench_hist_merge(h, &kids[i].rep.hist);
        }
    } else {
        ok = 0;
    }
    selfstat_t self1 = self_sum(0, nkids);
    stop_children();
    if (!ok)
        return 1;
    double cpu = cpu0 >= 0 && cpu1 >= 0 ? cpu1 - cpu0 : -1;
    double rps = (double)replies / O.duration;
    double usr = cpu >= 0 && replies ? cpu * 1e6 / (double)replies : -1;
    double p50 = ms(bench_hist_quantile(h, 0.5)), p99 = ms(bench_hist_quantile(h, 0.99));
    double mx = ms(h->max);
    if (!O.quiet) {
        printf("gohub-bench echo  label=%s  type=%s conns=%ld window=%ld procs=%d\n", O.label, O.type,
               O.conns, O.window, nkids);
        printf("  replies        %10llu   errors %llu  connected %llu  failed %llu  dropped %llu\n",
               (unsigned long long)replies, (unsigned long long)errors,
               (unsigned long long)s.connected, (unsigned long long)s.failed,
               (unsigned long long)dropped);
        printf("  replies/s      %10.0f\n", rps);
        printf("  latency ms     p50 %.3f  p99 %.3f  max %.3f\n", p50, p99, mx);
        if (cpu >= 0)
            printf("  server CPU     %10.2f s, %.2f us per reply\n", cpu, usr);
        self_print("clients", &self0, &self1, nkids);
    }
    free(h);
    jraw("{");
    jkey("mode"), jstr("echo");
    jkey("label"), jstr(O.label);
    jkey("type"), jstr(O.type);
    jkey("conns"), jraw("%ld", O.conns);
    jkey("window"), jraw("%ld", O.window);
    jkey("connected"), jraw("%llu", (unsigned long long)s.connected);
    jkey("failed"), jraw("%llu", (unsigned long long)s.failed);
    jkey("dropped"), jraw("%llu", (unsigned long long)dropped);
    jkey("replies"), jraw("%llu", (unsigned long long)replies);
    jkey("errors"), jraw("%llu", (unsigned long long)errors);
    jkey("replies_per_s"), jnum(rps, 1, 0);
    jkey("p50_ms"), jnum(p50, 3, 0);
    jkey("p99_ms"), jnum(p99, 3, 0);
    jkey("max_ms"), jnum(mx, 3, 0);
    jkey("server_cpu_s"), jnum(cpu, 2, 1);
    jkey("server_us_per_reply"), jnum(usr, 3, 1);
    jraw("}");
    jflush();
    return s.failed > 0 || s.connected == 0 || replies == 0 ? 1 : 0;
}

int main(int argc, char **argv)
{
    parse_args(argc, argv);
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    signal(SIGPIPE, SIG_IGN);
    switch (O.mode) {
    case MODE_HOLD:
        return run_hold();
    case MODE_FANOUT:
        return run_fanout();
    default:
        return run_echo();
    }
}
