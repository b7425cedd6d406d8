/*
 * A milter that does nothing, in C on libmilter: the floor of bench/milter_bench.py.
 *
 *     null_milter SOCKET PROTOCOL
 *
 * SOCKET is libmilter's syntax ("inet:PORT@127.0.0.1"); PROTOCOL is the SMFIP_* bits to ask
 * the MTA for, as filterd asks them for its chain (filterd.protocols.milter_map.protocol_flags,
 * computed by the benchmark and passed in decimal). It registers the callbacks filterd's milter
 * registers, asks for every action the MTA offers among those filterd asks for, and answers
 * every step CONTINUE, or nothing where the step was negotiated without a reply. No state, no
 * output. libmilter stops it on SIGTERM.
 *
 * Built by bench/milter_bench.py: gcc -O2 -o BUILD/null_milter null_milter.c -lmilter
 * (Debian: libmilter-dev).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libmilter/mfapi.h>

#define ACTIONS (SMFIF_ADDHDRS | SMFIF_CHGHDRS | SMFIF_CHGBODY | SMFIF_ADDRCPT | \
                 SMFIF_ADDRCPT_PAR | SMFIF_DELRCPT | SMFIF_CHGFROM | SMFIF_QUARANTINE)

static unsigned long wanted; /* the SMFIP_* bits asked for */

/* The bits negotiated on this connection live in its private pointer (no allocation). */
static sfsistat quiet(SMFICTX *ctx, unsigned long bit)
{
    unsigned long negotiated = (unsigned long)(uintptr_t)smfi_getpriv(ctx);
    return (negotiated & bit) ? SMFIS_NOREPLY : SMFIS_CONTINUE;
}

static sfsistat on_negotiate(SMFICTX *ctx, unsigned long f0, unsigned long f1,
                             unsigned long f2, unsigned long f3, unsigned long *pf0,
                             unsigned long *pf1, unsigned long *pf2, unsigned long *pf3)
{
    (void)f2;
    (void)f3;
    *pf0 = f0 & ACTIONS;
    *pf1 = f1 & wanted;
    *pf2 = 0;
    *pf3 = 0;
    smfi_setpriv(ctx, (void *)(uintptr_t)*pf1);
    return SMFIS_CONTINUE;
}

static sfsistat on_connect(SMFICTX *ctx, char *host, _SOCK_ADDR *addr)
{
    (void)host;
    (void)addr;
    return quiet(ctx, SMFIP_NR_CONN);
}

static sfsistat on_helo(SMFICTX *ctx, char *name)
{
    (void)name;
    return quiet(ctx, SMFIP_NR_HELO);
}

static sfsistat on_envfrom(SMFICTX *ctx, char **argv)
{
    (void)argv;
    return quiet(ctx, SMFIP_NR_MAIL);
}

static sfsistat on_envrcpt(SMFICTX *ctx, char **argv)
{
    (void)argv;
    return quiet(ctx, SMFIP_NR_RCPT);
}

static sfsistat on_data(SMFICTX *ctx)
{
    return quiet(ctx, SMFIP_NR_DATA);
}

static sfsistat on_header(SMFICTX *ctx, char *name, char *value)
{
    (void)name;
    (void)value;
    return quiet(ctx, SMFIP_NR_HDR);
}

static sfsistat on_eoh(SMFICTX *ctx)
{
    return quiet(ctx, SMFIP_NR_EOH);
}

static sfsistat on_body(SMFICTX *ctx, unsigned char *chunk, size_t size)
{
    (void)chunk;
    (void)size;
    return quiet(ctx, SMFIP_NR_BODY);
}

static sfsistat on_unknown(SMFICTX *ctx, const char *command)
{
    (void)command;
    return quiet(ctx, SMFIP_NR_UNKN);
}

static sfsistat on_eom(SMFICTX *ctx)
{
    (void)ctx;
    return SMFIS_CONTINUE;
}

static sfsistat on_abort(SMFICTX *ctx)
{
    (void)ctx;
    return SMFIS_CONTINUE;
}

static sfsistat on_close(SMFICTX *ctx)
{
    smfi_setpriv(ctx, NULL);
    return SMFIS_CONTINUE;
}

int main(int argc, char **argv)
{
    struct smfiDesc desc;
    char *end;

    if (argc != 3) {
        fprintf(stderr, "usage: %s SOCKET PROTOCOL\n", argv[0]);
        return 2;
    }
    wanted = strtoul(argv[2], &end, 10);
    if (*argv[2] == '\0' || *end != '\0') {
        fprintf(stderr, "%s: PROTOCOL must be a decimal number, not %s\n", argv[0], argv[2]);
        return 2;
    }
    memset(&desc, 0, sizeof desc);
    desc.xxfi_name = "null";
    desc.xxfi_version = SMFI_VERSION;
    desc.xxfi_flags = ACTIONS;
    desc.xxfi_connect = on_connect;
    desc.xxfi_helo = on_helo;
    desc.xxfi_envfrom = on_envfrom;
    desc.xxfi_envrcpt = on_envrcpt;
    desc.xxfi_header = on_header;
    desc.xxfi_eoh = on_eoh;
    desc.xxfi_body = on_body;
    desc.xxfi_eom = on_eom;
    desc.xxfi_abort = on_abort;
    desc.xxfi_close = on_close;
    desc.xxfi_unknown = on_unknown;
    desc.xxfi_data = on_data;
    desc.xxfi_negotiate = on_negotiate;

    if (smfi_setconn(argv[1]) == MI_FAILURE || smfi_settimeout(600) == MI_FAILURE ||
        smfi_register(desc) == MI_FAILURE || smfi_opensocket(1) == MI_FAILURE) {
        fprintf(stderr, "%s: cannot listen on %s\n", argv[0], argv[1]);
        return 1;
    }
    return smfi_main() == MI_SUCCESS ? 0 : 1;
}
