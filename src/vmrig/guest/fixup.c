/*
 * A restored guest's fix-up (vmrig.image.snapshot): reseeds the kernel's
 * random number generator (and a TPM's, when the guest has one) and moves the
 * wall clock on (or sets it).
 *   fixup SEED_HEX +|= SECONDS NANOSECONDS   once, then exits
 *   fixup --serve IN OUT                     resident: a request per line on
 *                                            the FIFO IN, "ID ok" or "ID error ..."
 *                                            per line on OUT (ID: the seed's first
 *                                            16 digits), and the same on stderr
 *
 * Built on the host (vmrig.image.guestbin) for x86-64 Linux, without a C
 * library: a static program of a few kilobytes that runs on every Debian
 * release a guest may have. The resident form waits in the guest from before
 * a booted snapshot is saved; a restore starts with none of the guest's code
 * translated by TCG, so the fix-up's cost is the code it runs: side by side,
 * a restore to the first command took 247 ms with this program against 274 ms
 * with the perl script it replaces.
 */

typedef unsigned long size_t;
typedef long ssize_t;

enum {
	SYS_read = 0,
	SYS_write = 1,
	SYS_open = 2,
	SYS_close = 3,
	SYS_ioctl = 16,
	SYS_getpid = 39,
	SYS_exit = 60,
	SYS_clock_settime = 227,
	SYS_clock_gettime = 228,
};

#define O_RDWR 2
#define O_WRONLY 1
#define CLOCK_REALTIME 0
/* Makes the generator rekey from its input pool at once: a write alone waits
 * for the next periodic reseed. */
#define RNDRESEEDCRNG 0x5207

struct timespec {
	long tv_sec;
	long tv_nsec;
};

static long syscall3(long number, long a, long b, long c)
{
	long result;
	__asm__ volatile("syscall"
			 : "=a"(result)
			 : "a"(number), "D"(a), "S"(b), "d"(c)
			 : "rcx", "r11", "memory");
	return result;
}

static size_t length(const char *text)
{
	size_t n = 0;
	while (text[n])
		n++;
	return n;
}

static void put(int fd, const char *text)
{
	syscall3(SYS_write, fd, (long)text, (long)length(text));
}

/* Appends `text` to `out` (of `size` bytes, NUL-terminated). */
static void append(char *out, size_t size, const char *text)
{
	size_t n = length(out);
	while (*text && n + 1 < size)
		out[n++] = *text++;
	out[n] = 0;
}

static int parse_long(const char *text, long *value)
{
	int negative = *text == '-';
	long result = 0;
	if (negative)
		text++;
	if (!*text)
		return 0;
	for (; *text; text++) {
		if (*text < '0' || *text > '9')
			return 0;
		result = result * 10 + (*text - '0');
	}
	*value = negative ? -result : result;
	return 1;
}

static int hex_digit(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

#define USAGE "usage: fixup SEED_HEX +|= SECONDS NANOSECONDS"

/* TPM2_StirRandom (TPM 2.0 part 3, 14.2) of `seed` into the TPM's generator, if the
 * guest has a TPM: without it, two restores of one snapshot gave the same first
 * `tpm2_getrandom --hex 16`. Best effort: a guest without a TPM has nothing to stir. */
static void stir_tpm(const unsigned char *seed, size_t seed_length)
{
	unsigned char command[12 + 128], response[64];
	size_t n = seed_length < 128 ? seed_length : 128, size = 12 + n, i;
	long fd = syscall3(SYS_open, (long)"/dev/tpmrm0", O_RDWR, 0);
	if (fd < 0)
		return;
	command[0] = 0x80, command[1] = 0x01; /* TPM_ST_NO_SESSIONS */
	command[2] = 0, command[3] = 0, command[4] = (unsigned char)(size >> 8), command[5] = (unsigned char)size;
	command[6] = 0, command[7] = 0, command[8] = 0x01, command[9] = 0x46; /* TPM_CC_StirRandom */
	command[10] = (unsigned char)(n >> 8), command[11] = (unsigned char)n;
	for (i = 0; i < n; i++)
		command[12 + i] = seed[i];
	if (syscall3(SYS_write, fd, (long)command, (long)size) == (long)size)
		syscall3(SYS_read, fd, (long)response, (long)sizeof(response));
	syscall3(SYS_close, fd, 0, 0);
}

/* Does one fix-up; NULL when done, else what failed. */
static const char *fixup(int argc, char **argv)
{
	unsigned char seed[512];
	size_t seed_length = 0;
	long seconds, nanoseconds;
	struct timespec now;
	const char *hex;
	long fd, result;

	if (argc != 4 || (argv[1][0] != '+' && argv[1][0] != '=') || argv[1][1] ||
	    !parse_long(argv[2], &seconds) || !parse_long(argv[3], &nanoseconds) ||
	    nanoseconds < 0 || nanoseconds >= 1000000000)
		return USAGE;
	for (hex = argv[0]; hex[0] && hex[1] && seed_length < sizeof(seed); hex += 2) {
		int high = hex_digit(hex[0]), low = hex_digit(hex[1]);
		if (high < 0 || low < 0)
			return USAGE;
		seed[seed_length++] = (unsigned char)(high * 16 + low);
	}
	if (*hex)
		return USAGE;
	fd = syscall3(SYS_open, (long)"/dev/urandom", O_RDWR, 0);
	if (fd < 0)
		return "urandom: cannot open";
	result = syscall3(SYS_write, fd, (long)seed, (long)seed_length);
	if (result != (long)seed_length) {
		syscall3(SYS_close, fd, 0, 0);
		return "urandom: cannot write the seed";
	}
	result = syscall3(SYS_ioctl, fd, RNDRESEEDCRNG, 0);
	syscall3(SYS_close, fd, 0, 0);
	if (result < 0)
		return "RNDRESEEDCRNG: failed";
	stir_tpm(seed, seed_length);
	if (argv[1][0] == '+') {
		if (syscall3(SYS_clock_gettime, CLOCK_REALTIME, (long)&now, 0) < 0)
			return "clock_gettime: failed";
		seconds += now.tv_sec;
		nanoseconds += now.tv_nsec;
	}
	while (nanoseconds >= 1000000000) {
		nanoseconds -= 1000000000;
		seconds++;
	}
	now.tv_sec = seconds;
	now.tv_nsec = nanoseconds;
	if (syscall3(SYS_clock_settime, CLOCK_REALTIME, (long)&now, 0) < 0)
		return "clock_settime: failed";
	return 0;
}

static int blank(char c)
{
	return c == ' ' || c == '\t' || c == '\r';
}

/* Splits `line` at blanks into at most `max` words; returns how many. */
static int split(char *line, char **words, int max)
{
	int count = 0;
	while (*line) {
		while (blank(*line))
			*line++ = 0;
		if (!*line)
			break;
		if (count == max)
			return max + 1;
		words[count++] = line;
		while (*line && !blank(*line))
			line++;
	}
	return count;
}

static void format_number(long value, char *out)
{
	char digits[24];
	int n = 0;
	do {
		digits[n++] = (char)('0' + value % 10);
		value /= 10;
	} while (value);
	while (n)
		*out++ = digits[--n];
	*out = 0;
}

/* Answers each request line on `in` on `out` (and on stderr, the log, first). */
static int serve(const char *in_path, const char *out_path)
{
	/* Both FIFOs opened read-write: opening never blocks, and no writer's
	 * close is an end of file. */
	long in = syscall3(SYS_open, (long)in_path, O_RDWR, 0);
	long out = syscall3(SYS_open, (long)out_path, O_RDWR, 0);
	char buffer[4096], answer[600], number[24];
	size_t used = 0;
	int overlong = 0; /* the rest of a line longer than the buffer is being dropped */

	if (in < 0 || out < 0) {
		put(2, "fixup: cannot open its FIFOs\n");
		return 1;
	}
	answer[0] = 0;
	append(answer, sizeof(answer), "ready ");
	format_number(syscall3(SYS_getpid, 0, 0, 0), number);
	append(answer, sizeof(answer), number);
	append(answer, sizeof(answer), " ");
	format_number(in, number);
	append(answer, sizeof(answer), number);
	append(answer, sizeof(answer), "\n");
	put((int)out, answer); /* what __vmrig_fixup_running checks */
	for (;;) {
		ssize_t got = syscall3(SYS_read, in, (long)(buffer + used), (long)(sizeof(buffer) - 1 - used));
		size_t start = 0, i;
		if (got <= 0)
			return 1;
		used += (size_t)got;
		for (i = 0; i < used; i++) {
			char *words[5], id[17];
			const char *failure;
			int count, j;
			if (buffer[i] != '\n')
				continue;
			buffer[i] = 0;
			count = overlong ? 0 : split(buffer + start, words, 4);
			for (j = 0; j < 16 && count > 0 && words[0][j]; j++)
				id[j] = words[0][j];
			id[count > 0 ? j : 0] = 0;
			failure = count == 4 ? fixup(count, words) : overlong ? "request too long" : USAGE;
			overlong = 0;
			answer[0] = 0;
			append(answer, sizeof(answer), count > 0 ? id : "-");
			append(answer, sizeof(answer), failure ? " error " : " ok");
			append(answer, sizeof(answer), failure ? failure : "");
			append(answer, sizeof(answer), "\n");
			/* Logged before the answer: once a caller has its answer, the log has it. */
			put(2, answer);
			put((int)out, answer);
			start = i + 1;
		}
		for (i = start; i < used; i++)
			buffer[i - start] = buffer[i];
		used -= start;
		if (used == sizeof(buffer) - 1) {
			used = 0; /* a line longer than any request: dropped, then answered */
			overlong = 1;
		}
	}
}

static int same(const char *a, const char *b)
{
	while (*a && *a == *b)
		a++, b++;
	return *a == *b;
}

static int run(int argc, char **argv)
{
	const char *failure;
	if (argc == 4 && same(argv[1], "--serve"))
		return serve(argv[2], argv[3]);
	failure = fixup(argc - 1, argv + 1);
	if (!failure)
		return 0;
	put(2, failure);
	put(2, "\n");
	return 1;
}

/* The entry point without a C library: argc and argv are on the stack. */
void vmrig_start(long *stack)
{
	syscall3(SYS_exit, run((int)stack[0], (char **)(stack + 1)), 0, 0);
}

__asm__(".globl _start\n"
	"_start:\n"
	"  xor %rbp, %rbp\n"
	"  mov %rsp, %rdi\n"
	"  and $-16, %rsp\n"
	"  call vmrig_start\n"
	"  hlt\n");
