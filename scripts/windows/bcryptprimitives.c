/* A stand-in for Windows' bcryptprimitives.dll, for the Wine test prefix only
 * (scripts/windows-test builds it; never commit the DLL).
 *
 * Rust's std on Windows imports ProcessPrng from bcryptprimitives.dll for its
 * random numbers (HashMap keys). Wine 8.0 has no such DLL, so every Rust .exe
 * fails to start (status c0000135) without this. It forwards to
 * SystemFunction036 (RtlGenRandom) from advapi32, which Wine has. */
#include <windows.h>

BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T length)
{
    /* SystemFunction036 takes a ULONG: fill larger buffers in pieces. */
    while (length > 0) {
        ULONG piece = length > 0x40000000 ? 0x40000000 : (ULONG)length;
        if (!SystemFunction036(data, piece))
            return FALSE;
        data += piece;
        length -= piece;
    }
    return TRUE;
}
