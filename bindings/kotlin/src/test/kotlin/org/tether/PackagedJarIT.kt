package org.tether

import java.io.File
import java.util.jar.JarFile
import org.junit.jupiter.api.Assertions.assertArrayEquals
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertFalse
import org.junit.jupiter.api.Assertions.assertNotNull
import org.junit.jupiter.api.Assertions.assertNull
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.assertThrows

/** Run by failsafe after `package`, with the built jar (not target/classes) on the classpath. */
class PackagedJarIT {
    private val jar = File(System.getProperty("tether.jar"))

    @Test
    fun `the jar carries the native library under JNA's resource path and the license`() {
        JarFile(jar).use { j ->
            val so = j.getJarEntry("linux-x86-64/libtether.so")
            assertNotNull(so, "linux-x86-64/libtether.so missing from $jar")
            assertTrue(so.size > 100_000, "libtether.so is only ${so.size} bytes")
            val license = j.getJarEntry("META-INF/LICENSE")
            assertNotNull(license, "META-INF/LICENSE missing from $jar")
            val expected = File(System.getProperty("tether.license")).readBytes()
            assertArrayEquals(expected, j.getInputStream(license).readBytes())
        }
    }

    @Test
    fun `the library is loaded from the jar without jna_library_path`() {
        assertNull(System.getProperty("jna.library.path"))
        val from = File(TetherClient::class.java.protectionDomain.codeSource.location.toURI())
        assertEquals(jar.canonicalFile, from.canonicalFile, "the binding's classes should come from the jar")
        assertEquals(TetherClient.BINDING_VERSION.substringBeforeLast('.'), TetherClient.libraryVersion.substringBeforeLast('.'))
        // A native call that goes through the config checks.
        assertThrows<ConfigException> { TetherClient("ftp://nope") }
        // JNA extracted the library out of the jar rather than finding a build output, or the
        // copy LD_LIBRARY_PATH offers (standing in for a system install).
        val lib = TetherNative.library.file
        val decoy = File(System.getProperty("tether.decoy")).canonicalFile
        assertTrue(File(decoy, "libtether.so").exists(), "no decoy at $decoy")
        val searched = System.getenv("LD_LIBRARY_PATH").orEmpty().split(File.pathSeparator)
        assertTrue(searched.any { it.isNotEmpty() && File(it).canonicalFile == decoy }, "LD_LIBRARY_PATH: $searched")
        assertTrue(lib.isAbsolute, "loaded by name: $lib")
        // What the process mapped: JNA's copy out of the jar, already unlinked (none is left
        // behind), and no other libtether.
        // The maps show the real path: JNA's temp directory may sit behind a symlink.
        val real = File(lib.parentFile.canonicalFile, lib.name).path
        val mapped = File("/proc/self/maps").readLines().filter { "libtether" in it || real in it }
        assertTrue(mapped.isNotEmpty() && mapped.all { real in it && it.endsWith("(deleted)") }, "mapped: $mapped")
        assertEquals(null, TetherNative.bundledFailure)
        assertTrue(Regex("""jna\d*\.tmp""").matches(lib.name), "not an extracted copy: $lib")
        assertFalse(lib.exists(), "the extracted copy was left behind: $lib")
        println("libtether loaded from ${lib.path} (extracted from ${jar.name})")
    }
}
