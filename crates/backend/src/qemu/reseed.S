# bot-bottle stage 1's reseed: reads 64 bytes from the file argv[1] (the control port),
# adds them to the kernel's entropy pool credited (RNDADDENTROPY, 512 bits) and reseeds
# the CRNG (RNDRESEEDCRNG). Exit 0 only if every step succeeded, else 1.
        .intel_syntax noprefix
        .globl _start
        .text
_start:
        mov     rdi, [rsp+16]           # argv[1]
        test    rdi, rdi
        jz      fail
        mov     eax, 2                  # open(argv[1], O_RDONLY)
        xor     esi, esi
        xor     edx, edx
        syscall
        test    eax, eax
        js      fail
        mov     r12d, eax
        xor     r14d, r14d              # bytes read
1:      cmp     r14d, 64
        jae     2f
        xor     eax, eax                # read(fd, seed + n, 64 - n)
        mov     edi, r12d
        lea     rsi, [rip + seed]
        add     rsi, r14
        mov     edx, 64
        sub     edx, r14d
        syscall
        test    rax, rax
        jle     fail
        add     r14, rax
        jmp     1b
2:      mov     eax, 3                  # close(fd)
        mov     edi, r12d
        syscall
        mov     eax, 2                  # open("/dev/urandom", O_WRONLY)
        lea     rdi, [rip + urandom]
        mov     esi, 1
        xor     edx, edx
        syscall
        test    eax, eax
        js      fail
        mov     r12d, eax
        mov     eax, 16                 # ioctl(fd, RNDADDENTROPY, &info)
        mov     edi, r12d
        mov     esi, 0x40085203
        lea     rdx, [rip + info]
        syscall
        test    rax, rax
        jnz     fail
        mov     eax, 16                 # ioctl(fd, RNDRESEEDCRNG)
        mov     edi, r12d
        mov     esi, 0x5207
        xor     edx, edx
        syscall
        test    rax, rax
        jnz     fail
        mov     eax, 60                 # exit(0)
        xor     edi, edi
        syscall
fail:   mov     eax, 60                 # exit(1)
        mov     edi, 1
        syscall
urandom:
        .asciz  "/dev/urandom"
        .data
        .balign 8
info:   .long   512                     # entropy_count (bits)
        .long   64                      # buf_size (bytes)
seed:   .space  64
