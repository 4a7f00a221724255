// upy32: a 32-bit MicroPython for running viper code with 32-bit words in tests (see Makefile).
#include <stdint.h>
#include <alloca.h>

#define MICROPY_CONFIG_ROM_LEVEL            (MICROPY_CONFIG_ROM_LEVEL_CORE_FEATURES)
#define MICROPY_ENABLE_COMPILER             (1)
#define MICROPY_EMIT_X86                    (1)
#define MICROPY_ENABLE_GC                   (1)
#define MICROPY_HELPER_LEXER_UNIX           (1)
#define MICROPY_READER_POSIX                (1)
#define MICROPY_ALLOC_PATH_MAX              (256)
#define MICROPY_LONGINT_IMPL                (MICROPY_LONGINT_IMPL_MPZ)
#define MICROPY_ERROR_REPORTING             (MICROPY_ERROR_REPORTING_DETAILED)
#define MICROPY_PY_BUILTINS_MEMORYVIEW      (1)
#define MICROPY_PY_MICROPYTHON              (1)
#define MICROPY_PY_ARRAY_SLICE_ASSIGN       (1)
#define MICROPY_PY_BUILTINS_SLICE           (1)
#define MICROPY_PY_SYS                      (0)
#define MICROPY_PY_IO                       (0)
#define MICROPY_FLOAT_IMPL                  (MICROPY_FLOAT_IMPL_NONE)
#define MICROPY_GCREGS_SETJMP               (1)
#define MICROPY_HW_BOARD_NAME               "upy32"
#define MICROPY_HW_MCU_NAME                 "x86"

typedef int32_t mp_int_t;
typedef uint32_t mp_uint_t;
typedef long mp_off_t;
#define MP_SSIZE_MAX                        (0x7fffffff)

// machine code from the viper emitter goes to memory mapped executable
void upy32_alloc_exec(size_t min_size, void **ptr, size_t *size);
void upy32_free_exec(void *ptr, size_t size);
#define MP_PLAT_ALLOC_EXEC(min_size, ptr, size) upy32_alloc_exec(min_size, ptr, size)
#define MP_PLAT_FREE_EXEC(ptr, size) upy32_free_exec(ptr, size)

#define MP_STATE_PORT MP_STATE_VM
