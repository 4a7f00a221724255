// upy32 main: upy32 FILE runs FILE (compiled by this interpreter, viper included); exit 1 on an exception.
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "py/builtin.h"
#include "py/compile.h"
#include "py/gc.h"
#include "py/lexer.h"
#include "py/mperrno.h"
#include "py/mphal.h"
#include "py/runtime.h"
#include "py/stackctrl.h"
#include "shared/runtime/gchelper.h"

static char heap[16 * 1024 * 1024];

void upy32_alloc_exec(size_t min_size, void **ptr, size_t *size) {
    *size = (min_size + 4095) & ~(size_t)4095;
    *ptr = mmap(NULL, *size, PROT_READ | PROT_WRITE | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (*ptr == MAP_FAILED) {
        *ptr = NULL;
    }
}

void upy32_free_exec(void *ptr, size_t size) {
    munmap(ptr, size);
}

void mp_hal_stdout_tx_strn_cooked(const char *str, size_t len) {
    ssize_t r = write(1, str, len);
    (void)r;
}

void gc_collect(void) {
    gc_collect_start();
    gc_helper_collect_regs_and_stack();
    gc_collect_end();
}

mp_import_stat_t mp_import_stat(const char *path) {
    (void)path;
    return MP_IMPORT_STAT_NO_EXIST;
}

void nlr_jump_fail(void *val) {
    (void)val;
    fprintf(stderr, "upy32: uncaught NLR\n");
    _exit(2);
}

void NORETURN __fatal_error(const char *msg) {
    fprintf(stderr, "upy32: %s\n", msg);
    _exit(2);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: upy32 FILE\n");
        return 2;
    }
    mp_stack_ctrl_init();
    mp_stack_set_limit(256 * 1024);
    gc_init(heap, heap + sizeof(heap));
    mp_init();
    int ret = 0;
    nlr_buf_t nlr;
    if (nlr_push(&nlr) == 0) {
        mp_lexer_t *lex = mp_lexer_new_from_file(qstr_from_str(argv[1]));
        qstr name = lex->source_name;
        mp_parse_tree_t tree = mp_parse(lex, MP_PARSE_FILE_INPUT);
        mp_obj_t fun = mp_compile(&tree, name, false);
        mp_call_function_0(fun);
        nlr_pop();
    } else {
        mp_obj_print_exception(&mp_plat_print, (mp_obj_t)nlr.ret_val);
        ret = 1;
    }
    mp_deinit();
    return ret;
}
