// LD_PRELOAD shim for Mesa's lavapipe (llvmpipe's LLVM back end, gallivm): writes every compute
// shader module gallivm compiles, as LLVM IR after its optimisation passes and as an x86 object
// file, and the address each compiled shader was loaded at, so that `perf` samples in the JIT code
// can be mapped to instructions. Debian's release Mesa prints neither NIR nor LLVM IR
// (NIR_DEBUG and GALLIVM_DEBUG need a debug build); this needs only libLLVM, which lavapipe loads.
//
// Build and use through tools/lavapipe_profile.sh. Interposes two LLVM C API functions lavapipe
// imports (Mesa 22.x with LLVM 15: `nm -D libvulkan_lvp.so | grep LLVM`):
//   LLVMRunPasses           the optimisation pipeline over a whole module: module n is written after it
//                           as LAVAPIPE_JIT_DIR/NNNN.ll (and NNNN.o with LAVAPIPE_JIT_OBJECTS=1,
//                           emitted from a clone, so the JIT's own module is untouched);
//   LLVMGetPointerToGlobal  where a compiled function was placed: appended to LAVAPIPE_JIT_DIR/addresses
//                           as "module function address".
// With Mesa 22.3 each compute shader's module goes through LLVMRunPasses twice, and the second,
// odd-numbered, one is the optimised code that runs (its number is the one `addresses` gives).
// Set MESA_SHADER_CACHE_DISABLE=true, or shaders found in Mesa's disk cache are not compiled at all.
//
// The LLVM C API is declared here rather than included, so that no LLVM development package is
// needed: these signatures are stable across LLVM 13-18.
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef void *LLVMModuleRef, *LLVMTargetMachineRef, *LLVMPassBuilderOptionsRef, *LLVMErrorRef, *LLVMMemoryBufferRef,
    *LLVMExecutionEngineRef, *LLVMValueRef;
char *LLVMPrintModuleToString(LLVMModuleRef);
void LLVMDisposeMessage(char *);
LLVMModuleRef LLVMCloneModule(LLVMModuleRef);
void LLVMDisposeModule(LLVMModuleRef);
int LLVMTargetMachineEmitToMemoryBuffer(LLVMTargetMachineRef, LLVMModuleRef, int, char **, LLVMMemoryBufferRef *);
size_t LLVMGetBufferSize(LLVMMemoryBufferRef);
const char *LLVMGetBufferStart(LLVMMemoryBufferRef);
void LLVMDisposeMemoryBuffer(LLVMMemoryBufferRef);
const char *LLVMGetValueName(LLVMValueRef);
enum { LLVM_OBJECT_FILE = 1 };

static int modules;  // modules optimised so far

static void write_file(const char *name, const char *data, size_t len, const char *mode) {
    const char *dir = getenv("LAVAPIPE_JIT_DIR");
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir ? dir : ".", name);
    FILE *f = fopen(path, mode);
    if (!f) {
        fprintf(stderr, "lavapipe_jit_dump: cannot write %s\n", path);
        return;
    }
    fwrite(data, 1, len, f);
    fclose(f);
}

LLVMErrorRef LLVMRunPasses(LLVMModuleRef module, const char *passes, LLVMTargetMachineRef machine, LLVMPassBuilderOptionsRef options) {
    static LLVMErrorRef (*real)(LLVMModuleRef, const char *, LLVMTargetMachineRef, LLVMPassBuilderOptionsRef);
    if (!real) real = (LLVMErrorRef (*)(LLVMModuleRef, const char *, LLVMTargetMachineRef, LLVMPassBuilderOptionsRef))dlsym(RTLD_NEXT, "LLVMRunPasses");
    int n = __sync_fetch_and_add(&modules, 1);
    LLVMErrorRef result = real(module, passes, machine, options);
    char name[64];
    char *ir = LLVMPrintModuleToString(module);
    snprintf(name, sizeof name, "%04d.ll", n);
    write_file(name, ir, strlen(ir), "w");
    LLVMDisposeMessage(ir);
    const char *objects = getenv("LAVAPIPE_JIT_OBJECTS");
    if (machine && objects && strcmp(objects, "1") == 0) {
        LLVMModuleRef copy = LLVMCloneModule(module);
        char *error = NULL;
        LLVMMemoryBufferRef buffer;
        if (LLVMTargetMachineEmitToMemoryBuffer(machine, copy, LLVM_OBJECT_FILE, &error, &buffer) == 0) {
            snprintf(name, sizeof name, "%04d.o", n);
            write_file(name, LLVMGetBufferStart(buffer), LLVMGetBufferSize(buffer), "wb");
            LLVMDisposeMemoryBuffer(buffer);
        } else {
            fprintf(stderr, "lavapipe_jit_dump: module %d: %s\n", n, error ? error : "no object");
            LLVMDisposeMessage(error);
        }
        LLVMDisposeModule(copy);
    }
    return result;
}

void *LLVMGetPointerToGlobal(LLVMExecutionEngineRef engine, LLVMValueRef global) {
    static void *(*real)(LLVMExecutionEngineRef, LLVMValueRef);
    if (!real) real = (void *(*)(LLVMExecutionEngineRef, LLVMValueRef))dlsym(RTLD_NEXT, "LLVMGetPointerToGlobal");
    void *address = real(engine, global);
    char line[512];
    int len = snprintf(line, sizeof line, "%d %s %p\n", modules - 1, LLVMGetValueName(global), address);
    write_file("addresses", line, (size_t)len, "a");
    return address;
}
