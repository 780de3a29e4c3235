// DPI-C side of the simulated device memory: loads a screc memory image (sw/image.py format),
// refuses a corrupt one with a clear message, and serves byte ranges of its regions.
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <vector>

#include "svdpi.h"

namespace {

constexpr char kMagic[8] = {'S', 'C', 'R', 'E', 'C', 'I', 'M', 'G'};
constexpr uint32_t kVersion = 2;
constexpr size_t kHeaderBytes = 64;
constexpr size_t kDirEntryBytes = 32;
constexpr int kMaxRegions = 8;

std::vector<uint8_t> g_blob;
std::vector<uint8_t> g_region[kMaxRegions];
bool g_open = false;
constexpr uint64_t kMaxGrowth = uint64_t(1) << 32;

uint32_t crc32(const uint8_t* p, size_t n) {
    static uint32_t table[256];
    static bool ready = false;
    if (!ready) {
        for (uint32_t i = 0; i < 256; ++i) {
            uint32_t c = i;
            for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
            table[i] = c;
        }
        ready = true;
    }
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; ++i) c = table[(c ^ p[i]) & 0xFF] ^ (c >> 8);
    return c ^ 0xFFFFFFFFu;
}

template <typename T>
T get(size_t offset) {
    T v;
    std::memcpy(&v, g_blob.data() + offset, sizeof(T));
    return v;
}

int fail(const char* path, const char* what) {
    std::fprintf(stderr, "screc_image_open: %s: %s\n", path, what);
    g_blob.clear();
    return 1;
}

}  // namespace

extern "C" int screc_image_open(const char* path) {
    std::FILE* f = std::fopen(path, "rb");
    if (!f) return fail(path, "cannot open");
    g_blob.clear();
    uint8_t buf[1 << 16];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) g_blob.insert(g_blob.end(), buf, buf + n);
    std::fclose(f);
    if (g_blob.size() < kHeaderBytes) return fail(path, "truncated: shorter than the header");
    if (std::memcmp(g_blob.data(), kMagic, 8) != 0) return fail(path, "bad magic");
    if (get<uint32_t>(8) != kVersion) return fail(path, "unsupported version");
    uint32_t n_regions = get<uint32_t>(20);
    uint64_t payload = get<uint64_t>(32);
    if (g_blob.size() - kHeaderBytes != payload) return fail(path, "truncated or padded");
    if (crc32(g_blob.data() + kHeaderBytes, payload) != get<uint32_t>(40))
        return fail(path, "checksum mismatch");
    if (n_regions > kMaxRegions) return fail(path, "too many regions");
    for (int r = 0; r < kMaxRegions; ++r) g_region[r].clear();
    for (uint32_t i = 0; i < n_regions; ++i) {
        size_t e = kHeaderBytes + i * kDirEntryBytes;
        uint32_t id = get<uint32_t>(e);
        uint64_t off = get<uint64_t>(e + 8), size = get<uint64_t>(e + 16);
        if (id >= kMaxRegions || off + size > g_blob.size())
            return fail(path, "region outside the image");
        g_region[id].assign(g_blob.begin() + off, g_blob.begin() + off + size);
    }
    g_blob.clear();
    g_blob.shrink_to_fit();
    g_open = true;
    return 0;
}

extern "C" long long screc_image_region_size(int region) {
    return (g_open && region >= 0 && region < kMaxRegions) ? (long long)g_region[region].size()
                                                           : 0;
}

namespace {
bool grow(int region, uint64_t end) {
    if (!g_open || region < 0 || region >= kMaxRegions || end > kMaxGrowth) return false;
    if (g_region[region].size() < end) g_region[region].resize(end, 0);
    return true;
}
}  // namespace

// The host's DMA into device memory: copies a file into `region` at byte `addr` (the region
// grows to hold it). Returns 0, or 1 with a message.
extern "C" int screc_mem_load(int region, long long addr, const char* path) {
    std::FILE* f = std::fopen(path, "rb");
    if (!f) {
        std::fprintf(stderr, "screc_mem_load: %s: cannot open\n", path);
        return 1;
    }
    std::vector<uint8_t> data;
    uint8_t buf[1 << 16];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) data.insert(data.end(), buf, buf + n);
    std::fclose(f);
    if (addr < 0 || !grow(region, (uint64_t)addr + data.size())) {
        std::fprintf(stderr, "screc_mem_load: %s: region %d address %lld refused\n", path,
                     region, addr);
        return 1;
    }
    std::memcpy(g_region[region].data() + addr, data.data(), data.size());
    return 0;
}

// A device write of nbytes (<= 128) at byte `addr` of `region`; returns 1 if refused.
extern "C" int screc_mem_write(int region, long long addr, int nbytes, const svBitVecVal* data) {
    if (addr < 0 || nbytes < 0 || nbytes > 128 || !grow(region, (uint64_t)addr + nbytes))
        return 1;
    for (int i = 0; i < nbytes; ++i)
        g_region[region][addr + i] = (uint8_t)(data[i / 4] >> (8 * (i % 4)));
    return 0;
}

// The host reading device memory back: writes [addr, addr + nbytes) of `region` to a file.
extern "C" int screc_mem_dump(int region, long long addr, long long nbytes, const char* path) {
    if (addr < 0 || nbytes < 0 || !grow(region, (uint64_t)(addr + nbytes))) return 1;
    std::FILE* f = std::fopen(path, "wb");
    if (!f) return 1;
    size_t done = std::fwrite(g_region[region].data() + addr, 1, nbytes, f);
    std::fclose(f);
    return done == (size_t)nbytes ? 0 : 1;
}

// Copies nbytes (<= 128) of `region` from byte `addr` into `data` (little-endian). Bytes beyond
// the region read as zero; returns 1 if any requested byte was outside it, else 0.
extern "C" int screc_image_read(int region, long long addr, int nbytes, svBitVecVal* data) {
    uint8_t bytes[128] = {0};
    int oob = 0;
    for (int i = 0; i < nbytes && i < 128; ++i) {
        uint64_t a = (uint64_t)addr + i;
        if (g_open && region >= 0 && region < kMaxRegions && a < g_region[region].size())
            bytes[i] = g_region[region][a];
        else
            oob = 1;
    }
    for (int w = 0; w < 32; ++w) {
        data[w] = (uint32_t)bytes[4 * w] | ((uint32_t)bytes[4 * w + 1] << 8) |
                  ((uint32_t)bytes[4 * w + 2] << 16) | ((uint32_t)bytes[4 * w + 3] << 24);
    }
    return oob;
}

// The host's staging commands for one batch (sw/lookahead.py): rows of (SSD byte address,
// DRAM byte address, bytes), little-endian int64, read from a file by the P2P DMA model.
namespace {
std::vector<int64_t> g_stage;
}  // namespace

extern "C" int screc_stage_open(const char* path) {
    g_stage.clear();
    std::FILE* f = std::fopen(path, "rb");
    if (!f) {
        std::fprintf(stderr, "screc_stage_open: %s: cannot open\n", path);
        return -1;
    }
    int64_t v;
    while (std::fread(&v, sizeof v, 1, f) == 1) g_stage.push_back(v);
    std::fclose(f);
    if (g_stage.size() % 3 != 0) {
        std::fprintf(stderr, "screc_stage_open: %s: not whole (src, dst, bytes) commands\n", path);
        g_stage.clear();
        return -1;
    }
    for (size_t i = 0; i < g_stage.size(); i += 3) {
        if (g_stage[i] < 0 || g_stage[i + 1] < 0 || g_stage[i + 2] <= 0 || g_stage[i + 2] > 65535) {
            std::fprintf(stderr, "screc_stage_open: %s: command %zu out of range\n", path, i / 3);
            g_stage.clear();
            return -1;
        }
    }
    return (int)(g_stage.size() / 3);
}

extern "C" void screc_stage_command(int i, long long* src, long long* dst, int* nbytes) {
    *src = g_stage[3 * i];
    *dst = g_stage[3 * i + 1];
    *nbytes = (int)g_stage[3 * i + 2];
}
