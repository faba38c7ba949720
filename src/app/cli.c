#include "app/cli.h"

#include <stdio.h>
#include <string.h>

static void usage(FILE *f) {
    fprintf(f, "usage: spindle <command> [options]\n\n"
               "commands:\n"
               "  generate   generate text from a prompt\n"
               "  mkmodel    write a random-weight Llama GGUF model\n"
               "\nRun `spindle <command> --help` for a command's options.\n");
}

int sp_cli_main(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    fprintf(stderr, "spindle: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
