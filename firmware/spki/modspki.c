// keypin_spki: MicroPython dynamic native module over spki_core.c.
//   sha256_into(der, out) -> 0, or a negative error code; fills out[0:32].
//                            Allocates nothing: this is the verify-callback path.
//   sha256(der)           -> 32-byte bytes, or a negative int error code.
//   find(der)             -> (start, end) of the SPKI element, or a negative int.
// Errors are returned, never raised, so a caller inside mbedTLS's verify
// callback cannot unwind through C.
#include "py/dynruntime.h"
#include "spki_core.h"

static mp_obj_t kp_sha256_into(mp_obj_t der_in, mp_obj_t out_in) {
    mp_buffer_info_t der, out;
    mp_get_buffer_raise(der_in, &der, MP_BUFFER_READ);
    mp_get_buffer_raise(out_in, &out, MP_BUFFER_WRITE);
    if (out.len < 32) {
        mp_raise_ValueError(MP_ERROR_TEXT("out < 32 bytes"));
    }
    return MP_OBJ_NEW_SMALL_INT(kp_spki_sha256(der.buf, der.len, out.buf));
}
static MP_DEFINE_CONST_FUN_OBJ_2(kp_sha256_into_obj, kp_sha256_into);

static mp_obj_t kp_sha256(mp_obj_t der_in) {
    mp_buffer_info_t der;
    uint8_t out[32];
    mp_get_buffer_raise(der_in, &der, MP_BUFFER_READ);
    int r = kp_spki_sha256(der.buf, der.len, out);
    if (r != KP_OK) {
        return MP_OBJ_NEW_SMALL_INT(r);
    }
    return mp_obj_new_bytes(out, 32);
}
static MP_DEFINE_CONST_FUN_OBJ_1(kp_sha256_obj, kp_sha256);

static mp_obj_t kp_find(mp_obj_t der_in) {
    mp_buffer_info_t der;
    size_t s, e;
    mp_get_buffer_raise(der_in, &der, MP_BUFFER_READ);
    int r = kp_spki_find(der.buf, der.len, &s, &e);
    if (r != KP_OK) {
        return MP_OBJ_NEW_SMALL_INT(r);
    }
    mp_obj_t t[2] = { mp_obj_new_int_from_uint(s), mp_obj_new_int_from_uint(e) };
    return mp_obj_new_tuple(2, t);
}
static MP_DEFINE_CONST_FUN_OBJ_1(kp_find_obj, kp_find);

mp_obj_t mpy_init(mp_obj_fun_bc_t *self, size_t n_args, size_t n_kw, mp_obj_t *args) {
    MP_DYNRUNTIME_INIT_ENTRY
    mp_store_global(MP_QSTR_sha256_into, MP_OBJ_FROM_PTR(&kp_sha256_into_obj));
    mp_store_global(MP_QSTR_sha256, MP_OBJ_FROM_PTR(&kp_sha256_obj));
    mp_store_global(MP_QSTR_find, MP_OBJ_FROM_PTR(&kp_find_obj));
    MP_DYNRUNTIME_INIT_EXIT
}
