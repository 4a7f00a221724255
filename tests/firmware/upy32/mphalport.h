// upy32: no hardware
static inline unsigned int mp_hal_ticks_ms(void) {
    return 0;
}
static inline void mp_hal_set_interrupt_char(char c) {
    (void)c;
}
// no pins: keeps py/mphal.h from including extmod's virtual-pin API (not in the kit)
#define mp_hal_pin_obj_t void *
